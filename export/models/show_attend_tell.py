"""Show, Attend and Tell: a caption, and where the model looked for each of its words.

Xu, Ba, Kiros, Cho, Courville, Salakhutdinov, Zemel and Bengio, "Show, Attend and Tell: Neural
Image Caption Generation with Visual Attention", ICML 2015; the soft deterministic attention of
section 4.2. A CNN encoder gives an h×w grid of annotation vectors ``a_i``; an LSTM decoder reads
one word at a time. At each step the attention model ``f_att(a_i, h_{t-1})`` (one hidden layer)
gives a softmax ``α_t`` over the grid, the context is ``z_t = β_t Σ_i α_ti a_i`` with the gating
scalar ``β_t = σ(f_β(h_{t-1}))``, the LSTM reads ``[E y_{t-1}, z_t]`` and the deep output layer
``L_o(E y_{t-1} + L_h h_t + L_z z_t)`` scores the next word. The initial state comes from the
mean annotation through two MLPs. Training adds the doubly stochastic regularisation
``λ Σ_i (1 - Σ_t α_ti)²`` (averaged over the grid here), which asks every cell to be attended
to over the caption.

One difference from the paper, for our scenes: the annotation vectors get a learned position
embedding. Captions here say "left of" and "above", and a softmax over positions alone says
*what* is where only through the encoder's padding; the embedding lets the context carry *where*.

**Decoding is part of the graph** (`ShowAttendTell.forward`): the encoder runs once per image, then a
beam search of `MAX_BEAM` beams runs for `MAX_STEPS` unrolled steps, all in one ONNX graph. The
request's ``beam_size`` (1 is greedy decoding, exactly) and ``max_length`` are inputs of the
graph, one per image, so Triton's dynamic batcher batches whole captions of concurrent requests
with different options. The graph returns the best beam's tokens, each word's log-probability,
its attention map and its gate, traced back through the beam's history.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import (
    AttentionKind,
    AttentionSpec,
    AuxiliaryOutput,
    InputOption,
    ModelSpec,
    Normalization,
    Task,
)
from attnserve.transform import pixels_to_input, quantize

from ..data.captions import DIGIT_WORDS, END, PAD, START, VOCABULARY, CaptionScenes, caption_preprocess
from ._registry import register_model
from ._training import TrainingRecipe, TrainingStep

MAX_STEPS = 16
"""Unrolled decoding steps: the longest caption is 15 words and its end token."""
MAX_BEAM = 5
DEFAULT_BEAM = 3
NEG = -1e9
"""A log-probability that never wins (finite, so sums and ONNX's TopK stay well defined)."""

PAD_ID, START_ID, END_ID = VOCABULARY.index(PAD), VOCABULARY.index(START), VOCABULARY.index(END)
_DIGIT_OF_TOKEN = torch.tensor([DIGIT_WORDS.index(w) if w in DIGIT_WORDS else -1 for w in VOCABULARY])
_COUNTED = VOCABULARY.index("digits")


def digits_named(tokens: Tensor) -> Tensor:
    """N×10 in {0, 1}: the digits a caption's words name ("three" in "three digits :" counts
    the digits, it names none)."""
    digit = _DIGIT_OF_TOKEN[tokens]  # N×T, -1 for other words
    counted = torch.zeros_like(digit, dtype=torch.bool)
    counted[:, 0] = tokens[:, 1] == _COUNTED
    digit = torch.where(counted, -1, digit)
    present = torch.zeros(tokens.shape[0], len(DIGIT_WORDS) + 1)
    present.scatter_(1, torch.where(digit < 0, len(DIGIT_WORDS), digit), 1.0)
    return present[:, : len(DIGIT_WORDS)]


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """``image (N, 1, 112, 112) -> annotation vectors (N, h·w, D)`` on a stride-8 grid (14×14)."""

    def __init__(
        self, input_size: tuple[int, int], widths: tuple[int, int, int, int] = (24, 32, 48, 64)
    ) -> None:
        super().__init__()
        first, second, third, last = widths
        self.layers = nn.Sequential(
            _conv_bn_relu(1, first, stride=2),
            _conv_bn_relu(first, second, stride=2),
            _conv_bn_relu(second, third),
            _conv_bn_relu(third, last, stride=2),
            _conv_bn_relu(last, last),
        )
        self.grid = (input_size[0] // 8, input_size[1] // 8)
        self.dim = last
        self.position = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], last))
        nn.init.normal_(self.position, std=0.1)
        self.digits = nn.Conv2d(last, len(DIGIT_WORDS), 1)
        """Which digit each cell shows: the encoder's own objective (`digit_loss`), not served."""

    def forward(self, images: Tensor) -> Tensor:
        return self.annotations(self.layers(images))

    def annotations(self, features: Tensor) -> Tensor:
        return features.flatten(2).transpose(1, 2) + self.position

    def digit_loss(self, features: Tensor, present: Tensor) -> Tensor:
        """Multi-label cross-entropy of the digits a scene holds (``present``, N×10 in {0, 1})
        against each digit's strongest cell: the encoder learns to see digits from the first
        step, as Xu et al.'s encoder had learned to see objects (theirs on ImageNet)."""
        strongest = self.digits(features).flatten(2).amax(dim=2)
        return F.binary_cross_entropy_with_logits(strongest, present)


class AttendTellDecoder(nn.Module):
    """One step of the decoder, and the initial state (section 3.1.2 of the paper)."""

    def __init__(
        self, vocabulary: int, feature_dim: int, embed: int = 64, hidden: int = 192, attend: int = 96
    ):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, embed)
        self.init_h = nn.Linear(feature_dim, hidden)
        self.init_c = nn.Linear(feature_dim, hidden)
        self.attend_features = nn.Linear(feature_dim, attend)
        self.attend_hidden = nn.Linear(hidden, attend)
        self.attend_score = nn.Linear(attend, 1)
        self.gate = nn.Linear(hidden, 1)
        self.lstm = nn.LSTMCell(embed + feature_dim, hidden)
        self.out_hidden = nn.Linear(hidden, embed)
        self.out_context = nn.Linear(feature_dim, embed)
        self.out_words = nn.Linear(embed, vocabulary)
        self.dropout = nn.Dropout(0.2)

    def initial_state(self, annotations: Tensor) -> tuple[Tensor, Tensor]:
        mean = annotations.mean(dim=1)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def step(
        self, previous: Tensor, state: tuple[Tensor, Tensor], annotations: Tensor, projected: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor, Tensor]:
        """``previous`` word ids (N,) → (word logits (N, V), new state, α (N, L), β (N, 1))."""
        hidden, _ = state
        scores = self.attend_score(torch.tanh(projected + self.attend_hidden(hidden).unsqueeze(1))).squeeze(2)
        alpha = torch.softmax(scores, dim=1)
        beta = torch.sigmoid(self.gate(hidden))
        context = beta * torch.bmm(alpha.unsqueeze(1), annotations).squeeze(1)
        embedded = self.embed(previous)
        hidden, cell = self.lstm(torch.cat([embedded, context], dim=1), state)
        deep = embedded + self.out_hidden(hidden) + self.out_context(context)
        return self.out_words(self.dropout(deep)), (hidden, cell), alpha, beta


class ShowAttendTell(nn.Module):
    def __init__(
        self,
        input_size: tuple[int, int] = (112, 112),
        vocabulary: int = len(VOCABULARY),
        regularisation: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(input_size)
        self.decoder = AttendTellDecoder(vocabulary, self.encoder.dim)
        self.regularisation = regularisation
        self.vocabulary = vocabulary

    def forward(self, images: Tensor, beam_size: Tensor, max_length: Tensor) -> dict[str, Tensor]:
        """What is served: ``(images, beam_size, max_length) -> {tokens, word_scores,
        word_attention, word_gates}``, a beam search unrolled over `MAX_STEPS` steps.

        ``beam_size`` and ``max_length`` are (N, 1) int64, clamped to 1..`MAX_BEAM` and
        1..`MAX_STEPS` - 1. All `MAX_BEAM` beams are computed; beams beyond an image's beam size
        are given `NEG` after every selection, so they never survive it: with a beam size of 1
        this is greedy decoding, token for token. A finished beam continues with padding at no
        cost; at step ``max_length`` every unfinished beam must end. The best beam has the
        highest sum of log-probabilities (no length penalty: the captions are short and
        templated). Its history is traced back through the back-pointers, one gather per step.
        """
        encoder, decoder = self.encoder, self.decoder
        beams, vocabulary = MAX_BEAM, self.vocabulary
        annotations = encoder(images)
        cells, dim = annotations.shape[1], annotations.shape[2]
        annotations = annotations.unsqueeze(1).expand(-1, beams, -1, -1).reshape(-1, cells, dim)
        projected = decoder.attend_features(annotations)
        state = decoder.initial_state(annotations)
        hidden_size = state[0].shape[1]

        slots = torch.arange(beams).unsqueeze(0)
        live = slots < beam_size.clamp(1, beams)  # (N, K)
        longest = max_length.clamp(1, MAX_STEPS - 1)  # (N, 1)
        scores = torch.where(slots == 0, 0.0, NEG) + beam_size.to(images.dtype) * 0.0  # (N, K)
        finished = torch.zeros_like(live)
        previous = (beam_size * 0 + START_ID).expand(-1, beams).reshape(-1)
        words = torch.arange(vocabulary)
        end_only = torch.where(words == END_ID, 0.0, NEG)
        pad_only = torch.where(words == PAD_ID, 0.0, NEG)

        def per_beam(values: Tensor, origin: Tensor) -> Tensor:
            """Rows of (N·K, C) values reordered as the selection's origins say."""
            width = values.shape[-1]
            picked = values.reshape(-1, beams, width).gather(1, origin.unsqueeze(2).expand(-1, -1, width))
            return picked

        history: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
        for t in range(MAX_STEPS):
            logits, state, alpha, beta = decoder.step(previous, state, annotations, projected)
            log_probs = torch.log_softmax(logits, dim=1).reshape(-1, beams, vocabulary)
            log_probs = torch.where((longest <= t).unsqueeze(2), end_only, log_probs)
            log_probs = torch.where(finished.unsqueeze(2), pad_only, log_probs)
            candidates = (scores.unsqueeze(2) + log_probs).reshape(-1, beams * vocabulary)
            best, index = candidates.topk(beams, dim=1)
            scores = torch.where(live, best, NEG)
            origin = torch.div(index, vocabulary, rounding_mode="floor")
            token = index - origin * vocabulary
            word_score = log_probs.reshape(-1, beams * vocabulary).gather(1, index)
            state = (
                per_beam(state[0], origin).reshape(-1, hidden_size),
                per_beam(state[1], origin).reshape(-1, hidden_size),
            )
            alpha = per_beam(alpha, origin)
            beta = per_beam(beta, origin).squeeze(2)
            finished = finished.gather(1, origin) | (token == END_ID) | (token == PAD_ID)
            history.append((origin, token, word_score, alpha, beta))
            previous = token.reshape(-1)

        chosen = scores.argmax(dim=1, keepdim=True)  # (N, 1)
        tokens, word_scores, maps, gates = [], [], [], []
        for origin, token, word_score, alpha, beta in reversed(history):
            tokens.append(token.gather(1, chosen))
            word_scores.append(word_score.gather(1, chosen))
            maps.append(alpha.gather(1, chosen.unsqueeze(2).expand(-1, -1, cells)))
            gates.append(beta.gather(1, chosen))
            chosen = origin.gather(1, chosen)
        height, width = encoder.grid
        return {
            "tokens": torch.cat(tokens[::-1], dim=1).to(images.dtype),
            "word_scores": torch.cat(word_scores[::-1], dim=1),
            "word_attention": torch.cat(maps[::-1], dim=1).reshape(-1, MAX_STEPS, height, width),
            "word_gates": torch.cat(gates[::-1], dim=1),
        }

    def parity_inputs(self, batch_size: int, seed: int) -> np.ndarray:
        """Export's parity inputs: validation scenes as the gateway sends them (real captions of
        every length), the last image noise."""
        scenes = CaptionScenes("val", batch_size, seed=seed)
        pixels = quantize(np.stack([scenes[i].image for i in range(batch_size)]))[..., None]
        inputs = pixels_to_input(pixels, caption_preprocess())
        inputs[-1] = np.random.default_rng(seed).normal(size=inputs.shape[1:]).astype(np.float32)
        return inputs

    def teacher_forced(self, annotations: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Word logits (N, T, V) for target ``tokens`` (N, T: words, END, PAD...) read after START,
        and the attention (N, T, L)."""
        projected = self.decoder.attend_features(annotations)
        state = self.decoder.initial_state(annotations)
        previous = torch.full_like(tokens[:, 0], START_ID)
        logits, alphas = [], []
        for t in range(tokens.shape[1]):
            step_logits, state, alpha, _ = self.decoder.step(previous, state, annotations, projected)
            logits.append(step_logits)
            alphas.append(alpha)
            previous = tokens[:, t]
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)

    def training_loss(self, images: Tensor, tokens: Tensor, progress: float, step: int) -> TrainingStep:
        """Cross-entropy on every word and the end token, plus the doubly stochastic
        regularisation over the steps that are part of the caption, plus the encoder's digit
        objective (`Encoder.digit_loss`, the digits the caption names)."""
        features = self.encoder.layers(images)
        logits, alphas = self.teacher_forced(self.encoder.annotations(features), tokens)
        words = tokens != PAD_ID
        cross_entropy = F.cross_entropy(logits[words], tokens[words])
        attended = (alphas * words.unsqueeze(2)).sum(dim=1)
        coverage = ((1.0 - attended) ** 2).mean()
        seen = self.encoder.digit_loss(features, digits_named(tokens))
        accuracy = (logits.argmax(2)[words] == tokens[words]).float().mean()
        return TrainingStep(
            cross_entropy + self.regularisation * coverage + seen,
            {
                "ce": cross_entropy.item(),
                "cover": coverage.item(),
                "seen": seen.item(),
                "acc": accuracy.item(),
            },
        )


SPEC = ModelSpec(
    architecture="show_attend_tell",
    description=(
        "Show, Attend and Tell (Xu et al., ICML 2015): a small CNN encoder (a 14×14 grid of "
        "annotation vectors with a learned position embedding), an LSTM decoder with soft "
        "deterministic attention, the gating scalar β and the doubly stochastic regularisation; "
        "captions of 112×112 scenes of 1–4 handwritten digits (what, how large, where), decoded "
        "in the graph by beam search"
    ),
    task=Task.CAPTIONING,
    preprocess=caption_preprocess(),
    labels=VOCABULARY,
    attention=(
        AttentionSpec(
            name="word_attention",
            kind=AttentionKind.SPATIAL,
            axes=("word", "y", "x"),
            description=(
                "Where the decoder looked for each generated word: the soft attention α_t over the "
                "encoder's 14×14 grid at the step that generated word t"
            ),
            value_range="softmax over the 196 grid cells (each map sums to 1)",
            normalization=Normalization(method="minmax"),
            block="decoder",
        ),
    ),
    auxiliary_outputs=(
        AuxiliaryOutput(
            name="word_gates",
            description="the gating scalar β_t of each word: how much of the attended context it read",
        ),
    ),
    primary_attention="word_attention",
    primary_reason="the model's only map: one per generated word",
    options=(
        InputOption(
            name="beam_size",
            description="beams kept by the search (1: greedy decoding)",
            default=DEFAULT_BEAM,
            minimum=1,
            maximum=MAX_BEAM,
        ),
        InputOption(
            name="max_length",
            description="the most words a caption may have (its end token aside)",
            default=MAX_STEPS - 1,
            minimum=1,
            maximum=MAX_STEPS - 1,
        ),
    ),
)


@register_model(
    SPEC,
    TrainingRecipe(
        data=(("captions", 0.7), ("other_sizes", 0.3)),
        selection="captions",
        train_samples=40_000,
        max_seconds=660.0,
        max_steps=4_000,
        batch_size=64,
        max_lr=3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        ema_decay=0.995,
    ),
)
def show_attend_tell(**kwargs: object) -> ShowAttendTell:
    return ShowAttendTell(**kwargs)  # type: ignore[arg-type]
