"""``LogZHead``: TraFL's learned prompt-dependent log-partition ``z_φ(x)`` (spec §3.5, [DERIVED]).

A small linear or two-layer MLP on a pooled representation of the prompt: the mean of the frozen
reference's last hidden states over the prompt tokens. The features are computed without gradient,
so nothing flows into the backbone; only the head's own parameters learn.

The head must exist before the engine builds the optimizer, but the hidden size ``H`` is a property
of the model. :class:`LogZHead` therefore accepts ``hidden_size=None``: its first layer is then a
``torch.nn.LazyLinear`` whose parameters are placeholders until the first call (they are still
registered, so an optimizer built earlier holds them and trains them after materialisation). When
the size is known up front (config ``hidden_size``, or the objective's ``setup`` hook reading the
model), the head is an ordinary module from the start.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LogZHead", "pool_prompt_states"]


def pool_prompt_states(hidden_states: Tensor, prompt_mask: Tensor) -> Tensor:
    """Mean of the hidden states over the real prompt tokens. ``[B, S, H]``, ``[B, S]`` -> ``[B, H]`` (float32)."""
    m = prompt_mask.to(torch.float32).unsqueeze(-1)  # [B, S, 1]
    return (hidden_states.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


class LogZHead(nn.Module):
    """``z_φ(x) = head(pool(h_ref(x)))``: one scalar per row, in per-token units.

    ``kind = "linear"``: ``w·h + b``; ``kind = "mlp"``: ``w₂·act(W₁ h + b₁) + b₂``. The output layer
    starts at zero, so ``z_φ ≡ 0`` at initialisation (the optimum at θ = ref). Hidden layers are
    initialised from ``init_seed`` (never the global RNG), also when they are created lazily.
    """

    def __init__(self, hidden_size: int | None, *, kind: str = "linear", width: int = 64,
                 activation: str = "gelu", init_seed: int = 0) -> None:
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"unknown LogZHead kind {kind!r}; expected 'linear' or 'mlp'")
        self.kind = kind
        self.init_seed = init_seed
        out_in = 1 if kind == "linear" else width
        self.input = nn.Linear(hidden_size, out_in) if hidden_size else nn.LazyLinear(out_in)
        self.act: nn.Module = (nn.GELU() if activation == "gelu" else nn.Tanh()) if kind == "mlp" else nn.Identity()
        self.output: nn.Module = nn.Linear(width, 1) if kind == "mlp" else nn.Identity()
        self._initialised = False
        if hidden_size:
            self._initialise()

    @property
    def hidden_size(self) -> int | None:
        """Input size H, or None while the first layer is still lazy."""
        return None if self.is_lazy else int(self.input.weight.shape[1])

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.input.weight, nn.parameter.UninitializedParameter)

    @torch.no_grad()
    def _materialise(self, hidden_size: int) -> None:
        """Give the lazy first layer its shape ``[out, H]`` in place (the optimizer keeps the same
        parameter objects) without touching the global RNG; :meth:`_initialise` fills it."""
        layer = self.input
        layer.in_features = hidden_size
        layer.weight.materialize((layer.out_features, hidden_size))
        layer.bias.materialize((layer.out_features,))
        self._initialised = False

    @torch.no_grad()
    def _initialise(self) -> None:
        g = torch.Generator().manual_seed(self.init_seed)
        last = self.input if self.kind == "linear" else self.output
        if self.kind == "mlp":
            w = self.input.weight
            bound = 1.0 / max(1, w.shape[1]) ** 0.5
            w.copy_((torch.rand(w.shape, generator=g) * 2 - 1).mul_(bound).to(w.device, w.dtype))
            self.input.bias.zero_()
        last.weight.zero_()
        last.bias.zero_()
        self._initialised = True

    def forward(self, features: Tensor) -> Tensor:
        """``features [B, H]`` -> ``z [B]``."""
        if self.is_lazy:
            self._materialise(int(features.shape[-1]))
        if not self._initialised:
            self._initialise()
        x = features.to(self.input.weight.dtype)
        return self.output(self.act(self.input(x))).squeeze(-1)

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        super()._load_from_state_dict(*args, **kwargs)
        self._initialised = True  # loaded weights must never be re-initialised
