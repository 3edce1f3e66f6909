"""Architecture adapters: the only modules that know an architecture's tensor and module names.

The maths (``so8t.group``, ``so8t.fold``, ``so8t.gates``) never spells a tensor name; it asks an adapter
where the gate sites are. Qwen2-VL is the one architecture SO8T converts today (``so8t.adapters.qwen2vl``).
"""

from __future__ import annotations

from so8t.adapters import qwen2vl

__all__ = ["qwen2vl"]
