"""FAU bookkeeping of the monitor: the counts of active units, per module, over windows, episodes and
the first update. (Not ``fau.py``: ``rlplastic.monitor.fau`` is :func:`rlplastic.monitor.activity.fau`.)

FAU (fraction of active units, docs/reference.md §2) is pooled as ``Σ positives / Σ elements`` over the
layers of a module and over the updates of an account. An account is one ``(L, 2)`` int64 device tensor
per module, ``[positive, total]`` per counted layer (in the module's layer order). :class:`FAUAccounts`
keeps five of them:

* ``window``: the open log window (closed by :meth:`FAUAccounts.close_window`, at each log);
* ``episode``: the open episode (closed by :meth:`FAUAccounts.close_episode`, at each episode end);
* ``last_window``, ``last_episode``: the last closed ones (what the logger and the signals read);
* ``first_update``: the very first update (Adaptive-RR's first reference).

Everything on the per-update path (:meth:`~FAUAccounts.fold`, :meth:`~FAUAccounts.count_update`,
:meth:`~FAUAccounts.record_first_update`, closing an account) is device work or plain counters: no
host sync. :meth:`~FAUAccounts.values` turns an account into ``<module>/<metric>`` and
``<module>/<layer>/<metric>`` device tensors; the monitor syncs once when it reads its signals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rlplastic.monitor.hooks import ActivationCapture

__all__ = ["ACCOUNTS", "FAUAccounts", "pooled_fau"]

#: The accounts, under the names they have in the monitor's checkpoint.
ACCOUNTS: tuple[str, ...] = ("window", "episode", "last_window", "last_episode", "first_update")


def pooled_fau(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Pooled and per-layer FAU from ``(L, 2)`` counts ``[positive, total]`` (device tensors)."""
    counts = counts.to(torch.float64 if counts.device.type != "mps" else torch.float32)
    return counts[:, 0].sum() / counts[:, 1].sum(), counts[:, 0] / counts[:, 1]


class FAUAccounts:
    """The monitor's FAU counts: open and last closed window and episode, and the first update.

    Args:
        device: where the counts live (the monitored modules' device).

    Attributes:
        layers: module name → its counted layers' names, in the order of the account rows.
        window_updates, episode_updates: updates counted into the open window and episode.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = torch.device("cpu") if device is None else device
        self.layers: dict[str, tuple[str, ...]] = {}
        self.window: dict[str, Tensor] = {}
        self.episode: dict[str, Tensor] = {}
        self.last_window: dict[str, Tensor] = {}
        self.last_episode: dict[str, Tensor] = {}
        self.first_update: dict[str, Tensor] = {}
        self.window_updates = 0
        self.episode_updates = 0

    def open(self, layers: Mapping[str, Sequence[str]], device: torch.device, counting: bool = True) -> None:
        """The layers (module → layer names) and the device of the counts; with ``counting``, an empty open
        window and episode for each module (without it the accounts stay empty: ``fau`` is off)."""
        self.device = device
        self.layers = {name: tuple(names) for name, names in layers.items()}
        for name, names in self.layers.items() if counting else ():
            for store in (self.window, self.episode):
                store[name] = torch.zeros(len(names), 2, dtype=torch.int64, device=device)

    # -- the per-update path (device work only) ---------------------------------------------------

    def count_update(self) -> None:
        """One more update in the open window and episode."""
        self.window_updates += 1
        self.episode_updates += 1

    def _counts(self, name: str, capture: ActivationCapture) -> Tensor:
        """The capture's counts since its last reset, as ``(L, 2)`` int64 (layers not called: 0)."""
        counts = capture.counts()
        zero = torch.zeros(2, dtype=torch.int64, device=self.device)
        return torch.stack([torch.stack(counts[layer]) if layer in counts else zero for layer in self.layers[name]])

    def record_first_update(self, captures: Mapping[str, ActivationCapture]) -> None:
        """Keep what ``captures`` counted so far as the first update's account (call after update 1)."""
        self.first_update = {name: self._counts(name, capture) for name, capture in captures.items()}

    def fold(self, captures: Mapping[str, ActivationCapture]) -> None:
        """Move the captures' counts into the open window and episode and reset the captures."""
        for name, capture in captures.items():
            if not capture.counts():
                continue
            current = self._counts(name, capture)
            self.window[name] += current
            self.episode[name] += current
            capture.reset()

    @staticmethod
    def _close(open_counts: dict[str, Tensor], closed: dict[str, Tensor]) -> None:
        """Move an account's counts into ``closed`` and zero it in place (on device, no sync)."""
        for name, counts in open_counts.items():
            closed[name] = counts.clone()
            counts.zero_()

    def close_window(self) -> bool:
        """Close the open window into ``last_window``; ``False`` (and nothing changes) when it had no update."""
        if not self.window_updates:
            return False
        self._close(self.window, self.last_window)
        self.window_updates = 0
        return True

    def close_episode(self) -> bool:
        """Close the open episode into ``last_episode``; ``False`` (and nothing changes) when it had no update."""
        if not self.episode_updates:
            return False
        self._close(self.episode, self.last_episode)
        self.episode_updates = 0
        return True

    # -- reading ----------------------------------------------------------------------------------

    def values(self, account: str, metric: str, prefix: str = "", per_layer: bool = True) -> dict[str, Tensor]:
        """``{prefix}<module>/{metric}`` (and ``{prefix}<module>/<layer>/{metric}``) of one account, as
        device tensors; ``account`` is one of :data:`ACCOUNTS`."""
        values = {}
        for name, module_counts in getattr(self, account).items():
            pooled, layer_fau = pooled_fau(module_counts)
            values[f"{prefix}{name}/{metric}"] = pooled
            if per_layer:
                for i, layer in enumerate(self.layers[name]):
                    values[f"{prefix}{name}/{layer}/{metric}"] = layer_fau[i]
        return values

    def signal_values(self) -> dict[str, Tensor]:
        """``<module>[/<layer>]/fau`` of the last closed window, ``<module>/episode_fau`` of the last closed
        episode and ``<module>/first_update_fau`` (device tensors)."""
        values = self.values("last_window", "fau")
        values.update(self.values("last_episode", "episode_fau", per_layer=False))
        values.update(self.values("first_update", "first_update_fau", per_layer=False))
        return values

    # -- layers that move (plasticity injection) --------------------------------------------------

    def follow(self, name: str, layers: Sequence[str], rows: Sequence[int | None]) -> None:
        """Module ``name`` now counts ``layers``; ``rows[i]`` is the old row of layer ``i`` (``None``: a new
        layer, from zero). Every account of the module is rebuilt in the new order."""
        for account in ACCOUNTS:
            store = getattr(self, account)
            if name in store:
                moved = torch.zeros(len(layers), 2, dtype=torch.int64, device=self.device)
                for i, row in enumerate(rows):
                    if row is not None:
                        moved[i] = store[name][row]
                store[name] = moved
        self.layers[name] = tuple(layers)

    # -- checkpointing ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The accounts (live tensors, shallow copies of the dicts) and the open update counts, under the
        keys of the monitor's checkpoint: ``window``, ``episode``, ``last_window``, ``last_episode``,
        ``first_update``, ``window_updates``, ``episode_updates``."""
        state: dict[str, Any] = {account: dict(getattr(self, account)) for account in ACCOUNTS}
        state["window_updates"] = self.window_updates
        state["episode_updates"] = self.episode_updates
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`: reads those keys of ``state`` (other keys are ignored)."""
        for account in ACCOUNTS:
            store = getattr(self, account)
            store.clear()
            store.update({name: t.to(self.device) for name, t in state[account].items()})
        self.window_updates = int(state["window_updates"])
        self.episode_updates = int(state["episode_updates"])
