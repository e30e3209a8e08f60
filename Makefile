# Quickstart targets: each sets up .venv (scripts/bootstrap.sh) before running.
PY := .venv/bin/python
export MUJOCO_GL ?= egl

.PHONY: setup train test lint bench

setup:
	@bash scripts/bootstrap.sh

train: setup  ## a few minutes on a laptop CPU: a states agent that visibly learns
	$(PY) train.py +experiment=quickstart

test: setup   ## the test suite (CPU, a few minutes); CI runs exactly this
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) bench/throughput.py
