"""The delta rule in plain PyTorch: the token-by-token recurrence that defines it and the chunkwise WY form.

Shapes: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H]; a state is [B, H, K, V] per sequence and head.
The state maps key space to value space as a right-hand matrix (the orientation of fla's kernels, the
transpose of the paper's S): a token reads o_t = S_t^T q_t and writes

    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T = S_{t-1} + k_t (beta_t (v_t - S_{t-1}^T k_t))^T.

The recurrence is stable when beta_t |k_t|^2 <= 2, which L2-normalised keys and beta in (0, 1) guarantee.
Every form computes in float32 and returns outputs in the dtype of v and final states in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def delta_rule_step(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, state: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """One token of the delta rule: q, k [B, H, K], v [B, H, V], beta [B, H], state [B, H, K, V] -> (o [B, H, V], state)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qf, kf, vf, bf, s = q.float() * scale, k.float(), v.float(), beta.float(), state.float()
    u = bf[..., None] * (vf - torch.einsum("bhk,bhkv->bhv", kf, s))
    s = s + kf[..., :, None] * u[..., None, :]
    o = torch.einsum("bhk,bhkv->bhv", qf, s)
    return o.to(v.dtype), s


def recurrent_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The delta rule token by token: (o [B, T, H, V], final state [B, H, K, V] or None). The definition of the op."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    s = q.new_zeros(b, h, dk, dv, dtype=torch.float32) if initial_state is None else initial_state.float()
    outputs = []
    for i in range(t):
        o, s = delta_rule_step(q[:, i], k[:, i], v[:, i], beta[:, i], s, scale)
        outputs.append(o)
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(b, 0, h, dv)
    return o, (s if output_final_state else None)


def chunk_delta_rule_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor | None]:
    """The delta rule chunk by chunk in the WY representation (Yang et al. 2024): same results as the recurrence.

    Rows are tokens. Within a chunk of C tokens starting from state S, the writes u'_t = beta_t (v_t - S_{t-1}^T k_t)
    solve the unit lower-triangular system (I + tril(diag(beta) K K^T, -1)) U' = diag(beta) (V - K S), so with
    T = (I + tril(diag(beta) K K^T, -1))^{-1} diag(beta), W = T K and U = T V:

        U' = U - W S,   O = Q S + tril(Q K^T) U',   S <- S + K^T U'.

    Everything that does not depend on S is computed for all chunks at once; only the state update
    S <- (I - K^T W) S + K^T U loops over chunks. A sequence that is not a multiple of C is padded with
    beta = 0 tokens, which leave the state untouched.
    """
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    if t == 0:
        return recurrent_delta_rule(q, k, v, beta, scale, initial_state, output_final_state)
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = n * c - t

    def chunks(x: Tensor) -> Tensor:  # [B, T, H, ...] -> [B, H, N, C, ...] in float32
        x = x.float().movedim(1, 2)
        x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
        return x.reshape(b, h, n, c, *x.shape[3:])

    qc, kc, vc, bc = chunks(q) * scale, chunks(k), chunks(v), chunks(beta)

    strictly_lower = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    a = (bc[..., :, None] * (kc @ kc.transpose(-1, -2))).masked_fill(~strictly_lower, 0)
    a = a + torch.eye(c, dtype=a.dtype, device=a.device)
    wu = torch.linalg.solve_triangular(a, bc[..., None] * torch.cat((kc, vc), -1), upper=False, unitriangular=True)
    w, u = wu.split((dk, dv), dim=-1)

    causal = strictly_lower | torch.eye(c, dtype=torch.bool, device=q.device)
    qk = (qc @ kc.transpose(-1, -2)).masked_fill(~causal, 0)
    # O = Q S + qk (U - W S) = qk U + (Q - qk W) S: only the second term waits for the chunk's start state
    o_intra = qk @ u
    q_state = qc - qk @ w

    kt = kc.transpose(-1, -2)
    decay, write = kt @ w, kt @ u  # S_next = S - decay S + write
    s = q.new_zeros(b, h, dk, dv, dtype=torch.float32) if initial_state is None else initial_state.float()
    starts = []
    for i in range(n):
        starts.append(s)
        s = s - decay[:, :, i] @ s + write[:, :, i]
    o = o_intra + q_state @ torch.stack(starts, dim=2)

    o = o.reshape(b, h, n * c, dv)[:, :, :t].movedim(2, 1).to(v.dtype)
    return o, (s if output_final_state else None)
