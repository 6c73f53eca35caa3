"""Activation memory predicted by walking one training forward pass op by op.

Activations are the tensors the forward pass saves for backward. They are predicted by
walking a Llama block op by op and applying PyTorch's own rule for what each op saves:
a matmul ``x @ W`` saves ``x`` only if ``W`` needs a gradient and saves ``W`` only if ``x``
needs one; ``a * b`` saves each operand only for the *other* one's gradient; SiLU saves its
input; softmax-like ops save their output; SDPA saves q, k, v, its output and a per-row
log-sum-exp (on CUDA with fp32 attention it runs the math kernel instead, which saves the full
attention matrix: :meth:`_Forward.math_sdpa`; 16-bit attention, from autocast or from weights
loaded in bf16, runs the fused kernels: :meth:`_Forward.math_kernel`). Each saved tensor is identified by the storage it lives in, so a tensor saved
by three ops (the normed hidden state feeding q, k and v) counts once, exactly as the
``saved_tensors_hooks`` meter counts it. Tracking which tensors need a gradient matters:
with a frozen base (LoRA), most matmuls save nothing but their frozen weight, and layer
0's attention input needs no gradient at all because the embedding is frozen.

Written out for the simplest case, a full fine-tune in fp32 without checkpointing, the
walk adds up to, per decoder layer and per token (h = hidden, i = intermediate, q = heads x
head_dim, kv = kv_heads x head_dim)::

    4 bytes x ( 2h + 1      input RMSNorm: its input, rsqrt, the normalized tensor
              + h           q/k/v input (the norm's output, one storage for all three)
              + 2q + 2kv    SDPA: rotated q and k, v, and its output (= o_proj's input)
              + 2h + 1      post-attention RMSNorm
              + h           gate/up input
              + 4i )        SiLU input, SiLU output, up output, their product (down's input)
    + 4 bytes x heads       SDPA's fp32 log-sum-exp

plus, once: token ids, rotary cos/sin, the final norm, the head's input and the loss's
fp32 log-softmax (tokens x vocab x 4 bytes; a chunked loss, ``Setup.loss="chunked"``, saves
the head's input and a per-token log-sum-exp instead). LoRA drops what only frozen weights needed
(the norms' normalized tensors, matmul inputs) and adds, per adapted projection, a dropout
mask, the dropped-out input and the rank-r intermediate. Gradient checkpointing keeps one
tokens x hidden tensor per layer. QLoRA's 4-bit matmuls save nothing.

The walk mirrors transformers' Llama code (``modeling_llama.py``) with SDPA attention,
peft's LoRA layers, bitsandbytes' 4-/8-bit matmuls and transformers' causal-LM loss, as
installed with this workbook. It is checked byte for byte against measurement in
``tests/test_estimate.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.errors import ConfigError
from ftlab.memory.architecture import LINEARS, Architecture, Setup


@dataclass(frozen=True)
class _T:
    """A tensor in the symbolic forward: a storage ``key``, its size, and whether it needs a grad."""

    key: str
    numel: int
    elem: int
    rg: bool

    @property
    def nbytes(self) -> int:
        return self.numel * self.elem


@dataclass
class _Forward:
    """Walks one training forward pass and collects what autograd saves, each storage once."""

    arch: Architecture
    setup: Setup
    batch: int
    seq: int
    saved: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    # -- primitive save rules ------------------------------------------------------------
    def save(self, t: _T) -> None:
        """Record a saved tensor; a storage already saved (same key) is not counted again."""
        self.saved.setdefault(t.key, t.nbytes)

    def new(self, key: str, features: int, elem: int, rg: bool) -> _T:
        """A fresh per-token tensor of ``features`` values per token."""
        return _T(key, self.tokens * features, elem, rg)

    def cast(self, t: _T, elem: int, key: str) -> _T:
        """``t.to(dtype)``: the same tensor when the dtype already matches, else a new storage.

        A cast saves nothing for backward (its gradient is just the reverse cast).
        """
        return t if t.elem == elem else _T(key, t.numel, elem, t.rg)

    def mul(self, x: _T, y: _T, key: str) -> _T:
        """``x * y`` saves ``y`` if ``x`` needs a gradient and ``x`` if ``y`` does."""
        if x.rg:
            self.save(y)
        if y.rg:
            self.save(x)
        return _T(key, max(x.numel, y.numel), max(x.elem, y.elem), x.rg or y.rg)

    def dropout(self, x: _T, key: str) -> _T:
        """Training-mode dropout saves its mask, but only if ``x`` needs a gradient.

        On CPU PyTorch implements it as ``x * (bernoulli(1-p) / (1-p))``: the mask is a
        tensor in ``x``'s dtype. On CUDA the fused kernel saves a one-byte bool mask.
        """
        if x.rg:
            self.save(_T(key + ".mask", x.numel, 1 if self.setup.device == "cuda" else x.elem, False))
        return _T(key, x.numel, x.elem, x.rg)

    def matmul(self, x: _T, w_key: str, w_numel: int, w_trainable: bool, out_features: int, key: str) -> _T:
        """A dense ``nn.Linear``: saves its input for the weight's gradient (if the weight
        trains) and its weight for the input's gradient (a parameter, so not an activation).

        Under bf16 autocast the matmul runs on bf16 *copies*: the input is cast per call
        (a new storage), the weight is cast too (autocast caches the cast of a trainable
        leaf for the whole forward) and the matmul saves the copies -- so the bf16 weight
        copy is saved memory that no parameter accounts for.
        """
        if self.setup.autocast:
            xc = self.cast(x, 2, f"{key}.in@bf16")
            wc = _T(f"{w_key}@bf16", w_numel, 2, w_trainable)
            if wc.rg:
                self.save(xc)
            if xc.rg:
                self.save(wc)
            return self.new(key, out_features, 2, x.rg or w_trainable)
        if w_trainable:
            self.save(x)
        return self.new(key, out_features, x.elem, x.rg or w_trainable)

    # -- modules -------------------------------------------------------------------------
    def rmsnorm(self, x: _T, key: str) -> _T:
        """LlamaRMSNorm: ``w * (x32 * rsqrt(mean(x32**2) + eps)).to(dtype)``.

        ``x32`` is ``x`` itself in fp32 or a fresh fp32 copy of a bf16 ``x``; ``pow`` and the
        multiply save it. ``rsqrt`` saves its fp32 output (one value per token). The final
        multiply by the weight saves the normalized tensor only if the weight trains (full
        fine-tuning); with a frozen weight only the weight is needed. If ``x`` needs no
        gradient (layer 0 with a frozen embedding) nothing upstream of the weight is saved.
        """
        trainable = self.setup.full
        x32 = self.cast(x, 4, key + ".x32")
        if x.rg:
            self.save(x32)
            self.save(self.new(key + ".rsqrt", 1, 4, True))
        normed = self.cast(self.new(key + ".normed", self.arch.hidden, 4, x.rg), x.elem, key + ".normed_cast")
        if trainable:
            self.save(normed)
        return self.new(key, self.arch.hidden, x.elem, x.rg or trainable)

    def linear(self, x: _T, layer: int, name: str) -> _T:
        """A projection: the (dense or 4/8-bit) base matmul plus, if targeted, LoRA's path.

        bitsandbytes' 4-bit and 8-bit matmuls keep their packed weight in ``ctx`` and save
        no activation at all (backward dequantizes the weight again). LoRA computes
        ``B(A(dropout(x))) * scale``: dropout saves its mask, ``A`` saves its (dropped-out)
        input of width ``in``, ``B`` saves ``A``'s rank-r output; with dropout 0 peft's
        dropout is the identity and ``A`` saves ``x`` itself, shared with whatever else
        saved it. peft first casts ``x`` to the adapter's dtype (fp32), a new storage on a
        bf16 base.
        """
        fan_in, fan_out, _ = self.arch.linear_shapes()[name]
        key = f"L{layer}.{name}"
        s = self.setup
        if s.quant:  # casts x to the compute dtype and back; saves nothing
            out = self.new(key, fan_out, x.elem, x.rg)
        else:
            out = self.matmul(x, f"W.{key}", fan_in * fan_out, s.full, fan_out, key)
        if name in s.lora_targets:
            self.lora(x, key, fan_in, fan_out)
            out = _T(out.key, out.numel, out.elem, True)
        return out

    def lora(self, x: _T, key: str, fan_in: int, fan_out: int) -> None:
        s = self.setup
        # peft's bnb layers skip the cast under (CUDA) autocast: torch.is_autocast_enabled() with
        # no device argument asks about CUDA, so on CPU they cast even under CPU autocast
        casts_input = not (s.autocast and s.quant and s.device == "cuda")
        xl = self.cast(x, s.lora_elem, key + ".lora_in") if casts_input else x
        if s.lora_dropout > 0:
            xl = self.dropout(xl, key + ".lora_drop")
        a_out = self.matmul(xl, f"W.{key}.lora_A", s.lora_r * fan_in, True, s.lora_r, key + ".lora_A")
        self.matmul(a_out, f"W.{key}.lora_B", fan_out * s.lora_r, True, fan_out, key + ".lora_B")

    def attention(self, x: _T, layer: int) -> _T:
        """q/k/v projections, rotary embedding, SDPA and the output projection.

        Rotary computes ``q * cos + rotate_half(q) * sin``: the multiplies save ``cos`` and
        ``sin`` (computed once per forward, shape seq x head_dim, shared by every layer, so
        counted once), not ``q``. SDPA (with GQA, no mask: causal, no padding) saves the
        rotated q and k, v (still at key/value-head size, GQA does not expand it), its
        output and an fp32 log-sum-exp per query row and head. The output projection's
        input is SDPA's output itself (the transpose back is a view), so it adds nothing.
        """
        a, d = self.arch, self.arch.d
        q = self.linear(x, layer, "q_proj")
        k = self.linear(x, layer, "k_proj")
        v = self.linear(x, layer, "v_proj")
        cos = _T("rotary.cos", self.seq * d, self.setup.a, False)
        sin = _T("rotary.sin", self.seq * d, self.setup.a, False)
        rotated = []
        for t, heads, name in ((q, a.heads, "q"), (k, a.kv_heads, "k")):
            r1 = self.mul(t, cos, f"L{layer}.{name}_cos")
            self.mul(_T(f"L{layer}.{name}_half", t.numel, t.elem, t.rg), sin, f"L{layer}.{name}_sin")
            rotated.append(_T(f"L{layer}.{name}_rot", r1.numel, r1.elem, t.rg))
        q_rot, k_rot = rotated
        if self.math_kernel(q_rot):
            return self.linear(self.math_sdpa(q_rot, k_rot, v, layer), layer, "o_proj")
        # SDPA is a bf16 op under autocast: fp32 inputs get bf16 copies, which it saves
        elem = 2 if self.setup.autocast else q_rot.elem
        qkv = [self.cast(t, elem, f"{t.key}@sdpa") for t in (q_rot, k_rot, v)]
        rg = any(t.rg for t in qkv)
        out = self.new(f"L{layer}.attn_out", a.heads * d, elem, rg)
        if rg:
            for t in qkv + [out]:
                self.save(t)
            self.save(_T(f"L{layer}.lse", self.tokens * a.heads, 4, False))
            if self.setup.device == "cuda":  # CUDA's flash kernel also keeps its RNG seed and offset
                self.save(_T(f"L{layer}.philox", 2, 8, False))
        return self.linear(out, layer, "o_proj")

    def math_kernel(self, q: _T) -> bool:
        """Whether SDPA runs PyTorch's math kernel: on CUDA, only where attention computes in fp32.

        The kernel follows the dtype of q, k and v, not how they got it: under autocast they
        are bf16 copies, and a model loaded in bf16 (or fp16) makes them 16-bit without any
        autocast; both run the fused kernels. Only fp32 q/k/v with GQA fall back to the math
        kernel. On CPU the fused (flash) kernel runs in every precision.
        """
        return self.setup.device == "cuda" and not self.setup.autocast and q.elem == 4

    def math_sdpa(self, q: _T, k: _T, v: _T, layer: int) -> _T:
        """SDPA on CUDA in fp32: PyTorch's math kernel, as composed operations.

        CUDA's fused kernels take GQA (``enable_gqa``, which transformers passes when there is
        no mask) only in 16-bit, so an fp32 step runs the math kernel, measured on an H200
        (torch 2.11, ``benchmarks/gpu_check.sh``) to the byte. It expands k and v to every
        query head, scales q and k by the square root of the scale (new storages), and saves
        what each op needs: ``q @ k^T`` the scaled q and k, the softmax its output, the full
        batch x heads x seq x seq probabilities in fp32, and ``probs @ v`` those probabilities
        and the expanded v. It saves no log-sum-exp and not its output, which the output
        projection saves only if it needs it. SmolLM2 at 16 x 512 saves 4.9 GiB more than the
        fused kernels would.
        """
        a, d = self.arch, self.arch.d
        q_s = self.new(f"L{layer}.q_scaled", a.heads * d, 4, q.rg)
        k_s = self.new(f"L{layer}.k_scaled", a.heads * d, 4, k.rg)  # expanded to every query head
        v_e = self.new(f"L{layer}.v_expanded", a.heads * d, 4, v.rg)
        if k_s.rg:
            self.save(q_s)
        if q_s.rg:
            self.save(k_s)
        probs = _T(f"L{layer}.attn_probs", self.batch * a.heads * self.seq * self.seq, 4, q_s.rg or k_s.rg)
        if probs.rg or v_e.rg:
            self.save(probs)  # softmax's output, and the operand probs @ v keeps for v's gradient
        if probs.rg:
            self.save(v_e)
        return self.new(f"L{layer}.attn_out", a.heads * d, 4, probs.rg or v_e.rg)

    def mlp(self, x: _T, layer: int) -> _T:
        """``down(silu(gate(x)) * up(x))``: SiLU saves its input (the gate output), the
        multiply saves both of its inputs (each for the other's gradient), and the down
        projection saves the product only if its own weight (or LoRA ``A``) needs it."""
        i = self.arch.intermediate
        gate = self.linear(x, layer, "gate_proj")
        up = self.linear(x, layer, "up_proj")
        if gate.rg:
            self.save(gate)
        act = self.new(f"L{layer}.act", i, gate.elem, gate.rg)
        prod = self.mul(act, up, f"L{layer}.prod")
        return self.linear(prod, layer, "down_proj")

    def layer(self, x: _T, layer: int) -> _T:
        """One decoder block: two pre-norm residual branches. Residual adds save nothing."""
        h = self.rmsnorm(x, f"L{layer}.input_layernorm")
        attn = self.attention(h, layer)
        mid = self.new(f"L{layer}.mid", self.arch.hidden, max(x.elem, attn.elem), x.rg or attn.rg)
        h = self.rmsnorm(mid, f"L{layer}.post_attention_layernorm")
        mlp = self.mlp(h, layer)
        return self.new(f"L{layer}.out", self.arch.hidden, max(mid.elem, mlp.elem), mid.rg or mlp.rg)

    def layer_trains(self) -> bool:
        s = self.setup
        return s.full or bool(s.lora_targets & set(LINEARS))

    def run(self) -> dict[str, int]:
        """The whole forward: embedding, the layers (or their checkpoints), norm, head, loss.

        * Embedding: saves the token ids (int64) for the weight's gradient, only if it trains.
        * Gradient checkpointing (non-reentrant, per decoder layer): the layer's internals
          are not kept; the checkpoint saves the layer's input hidden state (tokens x hidden),
          and the layer is recomputed during backward. Rotary cos/sin are then only used
          inside checkpoints, so they are not saved either.
        * Head: ``lm_head`` saves its input if it trains (full fine-tuning, tied or not).
        * Loss: transformers upcasts the logits to fp32 (a copy on a bf16 model), then
          ``cross_entropy`` = ``log_softmax`` (saves its fp32 output: tokens x vocab x 4
          bytes, usually the largest single activation) + ``nll_loss`` (saves the shifted
          int64 labels and a scalar total weight).
        """
        s, a = self.setup, self.arch
        if s.full:
            self.save(_T("input_ids", self.tokens, 8, False))
        x = self.new("embed", a.hidden, s.a, s.full)
        for layer in range(a.layers):
            if s.gradient_checkpointing:
                self.save(x)
                x = self.new(f"L{layer}.out", a.hidden, s.a, x.rg or self.layer_trains())
            else:
                x = self.layer(x, layer)
        x = self.rmsnorm(x, "norm")
        # labels padded by one then shifted: ``pad(labels)[..., 1:].contiguous()`` copies, except
        # with batch 1, where the slice is already contiguous and keeps the padded storage
        shift_labels = _T("shift_labels", self.tokens + (1 if self.batch == 1 else 0), 8, False)
        if s.loss == "chunked":
            return self.chunked_loss(x, shift_labels)
        self.matmul(x, "W.lm_head", a.vocab * a.hidden, s.full, a.vocab, "logits")
        if "lm_head" in s.lora_targets:
            self.lora(x, "lm_head", a.hidden, a.vocab)
        self.save(self.new("log_softmax", a.vocab, 4, True))
        self.save(shift_labels)
        self.save(_T("total_weight", 1, 4, False))
        return self.saved

    def chunked_loss(self, x: _T, shift_labels: _T) -> dict[str, int]:
        """Head and loss as one chunked function (``ftlab.lessons.chunked_loss``, Liger, Cut
        Cross-Entropy): it saves its input ``x`` (the final norm's output, whether or not the
        head trains: backward recomputes each chunk's logits from it), the labels and one fp32
        log-sum-exp per token, never a tokens x vocab tensor. A LoRA adapter on the head
        would be a second matmul inside it, which no chunked loss here computes."""
        if "lm_head" in self.setup.lora_targets:
            raise ConfigError("lora_target_modules", tuple(sorted(self.setup.lora_targets)),
                              "no lm_head with loss='chunked' (a chunked loss is predicted for a head without "
                              "LoRA); drop lm_head, or predict loss='cross_entropy'")
        self.save(x)
        self.save(shift_labels)
        self.save(self.new("loss.lse", 1, 4, False))
        return self.saved


def activation_bytes(arch: Architecture, setup: Setup, batch: int, seq: int) -> int:
    """Bytes autograd saves for backward in one forward of ``batch`` x ``seq`` tokens."""
    return sum(_Forward(arch, setup, batch, seq).run().values())


def activation_parts(arch: Architecture, setup: Setup, batch: int, seq: int) -> dict[str, int]:
    """The same, itemised by saved storage (keys such as ``L3.gate_proj``, ``log_softmax``)."""
    return dict(_Forward(arch, setup, batch, seq).run())

