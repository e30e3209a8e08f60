"""The docs in docs/ describe what the code writes, and the project cites nothing outside itself.

Glossary convention (docs/metrics.md): a documented tag is a backticked tag or tag pattern in the
**first cell of a table row**, e.g. ``| `plasticity/<module>/<layer>/dormant` | ... |``. A placeholder
in angle brackets stands for exactly one path segment (no ``/``). Backticked tags elsewhere (prose,
later cells) are mentions, not entries.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from rlplastic.logger import read_scalars_csv
from tests.test_trainer import run_train

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NAMESPACES = ("train/", "eval/", "time/", "rr/", "events/", "plasticity/")

# Written by the monitor until the curvature revision replaces it with hessian_max / hessian_min (both
# documented); treated as absent so that this test holds on both sides of that change.
RENAMED = {"plasticity/critic/hessian_top"}

# A tiny pixel run (so the encoder's tags appear) with the full monitor probing every 5 updates and
# every intervention that can be combined in one run: ReDo on encoder and actor every 5 updates,
# injection of the critic, a heads reset of the actor and shrink-and-perturb of the encoder at the
# first episode end, the four regularizers and SAM; Adaptive RR with a threshold that always switches.
TINY_PIXELS = [
    "task=cheetah_run", "device=cpu", "progress=false", "save_video=false", "use_tb=false", "fast_render=true",
    "action_repeat=8", "num_seed_frames=800", "num_train_frames=1000", "eval_every_frames=2000",
    "num_eval_episodes=1", "batch_size=10", "hidden_dim=16", "feature_dim=8", "replay_buffer_size=1000",
    "log_every_frames=200",
    "monitor=full", "monitor.probe_every_updates=5", "monitor.probe_batch_size=12", "monitor.hessian_iters=3",
    "monitor.hessian_directions_k=2",
    "monitor.hutchinson_probes=2",
    "intervention=[inject,redo,heads_reset,shrink_perturb,l2_init,w2_init,nc_reg,sam,weight_decay]",
    "intervention.inject.trigger.at_frames=[1000]",
    "intervention.redo.period=5", "intervention.redo.modules=[encoder,actor]", "intervention.redo.batch_size=10",
    "intervention.heads_reset.modules=[actor]", "intervention.heads_reset.trigger.every_frames=1000",
    "intervention.shrink_perturb.modules=[encoder]", "intervention.shrink_perturb.trigger.every_frames=1000",
    "rr=adaptive", "rr.check_every_frames=1000", "rr.threshold=1.0",
]  # fmt: skip


def glossary_entries(path: Path = DOCS / "metrics.md") -> list[str]:
    """The backticked tag patterns in the first cell of every table row of the glossary."""
    entries = []
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            continue
        first_cell = line.split("|")[1]
        entries += [t for t in re.findall(r"`([^`]+)`", first_cell) if t.startswith(NAMESPACES)]
    return entries


def pattern_regex(entry: str) -> re.Pattern[str]:
    """``plasticity/<module>/fau`` → ``plasticity/[^/]+/fau``, matched against the whole tag."""
    parts = re.split(r"(<[^<>/]+>)", entry)
    return re.compile("".join("[^/]+" if p.startswith("<") else re.escape(p) for p in parts))


def undocumented(tags: set[str], entries: list[str]) -> list[str]:
    regexes = [pattern_regex(e) for e in entries]
    return sorted(t for t in tags if not any(r.fullmatch(t) for r in regexes))


def test_pattern_convention():
    entries = ["plasticity/<module>/<layer>/fau", "events/redo/recycled"]
    assert undocumented({"plasticity/critic/Q1.1/fau", "plasticity/critic/Q1.base.1/fau"}, entries) == []
    assert undocumented({"plasticity/critic/fau", "events/redo/recycled/x"}, entries) == [
        "events/redo/recycled/x", "plasticity/critic/fau",
    ]  # fmt: skip


def test_glossary_documents_the_tags_being_introduced():
    entries = set(glossary_entries())
    assert {
        "plasticity/critic/hessian_max", "plasticity/critic/hessian_min", "plasticity/critic/hessian_trace",
        "plasticity/critic/hessian_trace_se", "plasticity/critic/hessian_directions",
        "plasticity/figures/activity", "plasticity/figures/critic_spectrum", "plasticity/figures/hessian_spectrum",
        "plasticity/figures/collapse",
    } <= entries  # fmt: skip
    assert not entries & RENAMED


def test_every_tag_a_run_writes_is_documented(tmp_path):
    summary, _ = run_train(tmp_path, TINY_PIXELS)
    assert summary["status"] == "complete"
    series = read_scalars_csv(tmp_path / "run" / "scalars.csv")
    tags = set(series) - RENAMED
    # the run exercises what it is meant to: every namespace, encoder layers, probes, each kind of event
    for tag in (
        "train/critic_loss", "train/reg/l2_init/encoder", "train/reg/nc_reg/nc1", "eval/episode_reward",
        "time/probe_s", "rr/value", "events/rr_switch", "events/redo/encoder/convnet.1",
        "events/inject/critic/params/trainable", "events/heads_reset/params/actor",
        "events/shrink_perturb/optimizer_states/encoder", "plasticity/encoder/convnet.7/fau",
        "plasticity/critic/Q1.3/dormant", "plasticity/critic/nc2_equiangular", "plasticity/actor/trunk/erank",
    ):  # fmt: skip
        assert tag in tags, tag
    missing = undocumented(tags, glossary_entries())
    assert not missing, f"tags written but not in docs/metrics.md: {missing}"


def project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored README.md, Makefile, *.py, *.yaml, *.toml, *.sh and docs/*.md."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    keep = [
        p for p in listed
        if p in ("README.md", "Makefile") or p.endswith((".py", ".yaml", ".toml", ".sh"))
        or (p.startswith("docs/") and p.endswith(".md"))
    ]  # fmt: skip
    return [ROOT / p for p in keep if (ROOT / p).is_file()]


# spelled in pieces so that this file does not cite them itself
OUTSIDE = ("REFERENCE" + ".md", "DESIGN" + ".md", "../" + "shared")


def test_docs_cite_nothing_outside_the_repository():
    offending = [
        f"{p.relative_to(ROOT)}: {word}"
        for p in DOCS.glob("*.md")
        for word in OUTSIDE
        if word in p.read_text()
    ]  # fmt: skip
    assert not offending


def test_no_project_file_cites_files_outside_the_repository():
    offending = [
        f"{p.relative_to(ROOT)}: {word}"
        for p in project_files()
        for word in OUTSIDE
        if word in p.read_text(errors="replace")
    ]  # fmt: skip
    assert not offending, offending


def test_reference_keeps_the_section_numbers_the_code_cites():
    text = (DOCS / "reference.md").read_text()
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.M)]
    assert numbers == [1, 2, 3, 4, 5, 6, 7]


def test_docs_links_resolve():
    for doc in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if not re.match(r"[a-z]+://", target):
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_library_guide_names_exist():
    """docs/library.md: every backticked repository path exists, every dotted ``rlplastic.…`` name imports,
    and every member in the contract table is a member of its protocol."""
    import importlib

    from rlplastic import protocols

    text = (DOCS / "library.md").read_text()
    for path in re.findall(r"`((?:rlplastic|agents|configs|scripts|tests)/[^`<>\s]*)`", text):
        assert (ROOT / path).exists(), path
    for dotted in set(re.findall(r"`(rlplastic(?:\.\w+)+)", text)):
        parts = dotted.split(".")
        for split in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:split]))
                break
            except ModuleNotFoundError:
                continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
    section = text.split("## The contract, part by part")[1].split("\n## ")[0]
    protocol = None
    for row in (line for line in section.splitlines() if line.startswith("| ")):
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0] not in ("protocol", "---"):
            protocol = getattr(protocols, cells[0].strip("`")) if cells[0] else protocol
            for member in re.findall(r"`(\w+)", cells[1]):
                assert hasattr(protocol, member) or member in protocol.__annotations__, (protocol, member)
