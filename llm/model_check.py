"""The prepare-time check: a bundled checkpoint gives its reference answers in
the dtype the engine serves it in, on this machine.

The **reference** is the GGUF dequantized by transformers in float32 (exact:
Q4_1 blocks are ``d * q + m`` with fp16 ``d``, ``m``), greedy on fixed prompts;
``reference_answers`` records each prompt's token ids, its answer's token ids
and, per step, the gap between the two best logits.

``check_bundled`` then runs each checkpoint through vLLM (a subprocess: vLLM
spawns workers and keeps process-wide state) in each candidate dtype, fastest
first, and keeps the first whose greedy tokens equal the reference. A
divergence is forgiven only where the reference's own top-2 gap is under
``TIE_MARGIN`` logits: float32 kernels differ by ~1e-4, bf16 rounding by
~0.1, so a near-tie flipped by float32 noise passes and bf16's flips do not.
When no candidate passes, preparation fails with the divergences
(``ModelCheckError``), so a machine that cannot serve the reference answers
is named at ``sirocco models prepare``, not in a later test.

Verdicts are recorded in ``served-dtypes.json`` under the machine's signature
(``llm.precision.machine_signature``); ``require_served_dtype`` reads them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sirocco.errors import ConfigError, ModelCheckError
from sirocco.files import exclusive_lock, read_json, write_json_atomic

logger = logging.getLogger(__name__)

#: Prompts whose greedy answers the check compares (tests pin some of them).
CHECK_PROMPTS = (
    "What is the capital of France?",
    "What is 2+2?",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "Name a colour.",
)
CHECK_TOKENS = 24
#: A divergence where the reference's top-2 logit gap is below this is a tie.
TIE_MARGIN = 0.01
REFERENCE_FILE = "reference.json"
SERVED_FILE = "served-dtypes.json"
RUN_TIMEOUT_S = 1200
_RESULT = "SIROCCO_CHECK_RESULT "

Runner = Callable[[Path, str, Sequence[Sequence[int]], int], list[list[int]]]


def reference_answers(model: Any, tokenizer: Any, prompts: Sequence[str] = CHECK_PROMPTS,
                      new_tokens: int = CHECK_TOKENS) -> dict[str, Any]:
    """Greedy answers of ``model`` (the float32 GGUF reference) to ``prompts``.

    The compared answers run ``new_tokens`` with end-of-turn banned (vLLM's
    ``min_tokens`` does the same), so every prompt gives a full-length
    comparison; ``margins`` are their top-2 logit gaps. ``texts`` are the
    answers as a chat shows them: up to where end-of-turn would have won.
    """
    import torch

    eos = tokenizer.eos_token_id
    out: dict[str, Any] = {"prompts": list(prompts), "new_tokens": new_tokens,
                           "prompt_ids": [], "token_ids": [], "margins": [], "texts": []}
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)
        ids = tokenizer.encode(text, add_special_tokens=False)
        x = torch.tensor([ids])
        with torch.no_grad():
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=tokenizer.pad_token_id or 0, output_scores=True,
                                 output_logits=True, return_dict_in_generate=True)
        answer = gen.sequences[0, len(ids):].tolist()
        gaps = [float(top[0] - top[1]) for top in
                (torch.topk(step[0].float(), 2).values for step in gen.scores)]
        natural = [int(step[0].argmax()) for step in gen.logits]
        end = natural.index(eos) if eos in natural else len(answer)
        out["prompt_ids"].append(ids)
        out["token_ids"].append(answer)
        out["margins"].append([round(g, 5) for g in gaps])
        out["texts"].append(tokenizer.decode(answer[:end], skip_special_tokens=True))
    return out


def compare_greedy(reference: Mapping[str, Any], got: Sequence[Sequence[int]]
                   ) -> tuple[bool, str]:
    """(passes, what happened): ``got`` equals the reference answers, or first
    differs from each only at a near-tie (gap < ``TIE_MARGIN``)."""
    notes, ok = [], True
    for i, (want, have) in enumerate(zip(reference["token_ids"], got, strict=True)):
        at = next((j for j, (a, b) in enumerate(zip(want, have, strict=False)) if a != b),
                  None if len(have) >= len(want) else len(have))
        if at is None:
            continue
        gap = reference["margins"][i][at] if at < len(want) else float("inf")
        tie = gap < TIE_MARGIN
        ok = ok and tie
        notes.append(f"prompt {i + 1} ({reference['prompts'][i]!r}) differs at token {at + 1} "
                     f"(reference top-2 gap {gap:.3f}{', a tie' if tie else ''})")
    return ok, "; ".join(notes) or "equal"


def run_vllm_greedy(model_dir: Path, dtype: str, prompt_ids: Sequence[Sequence[int]],
                    new_tokens: int) -> list[list[int]]:
    """Greedy answer ids from vLLM serving ``model_dir`` in ``dtype`` (a subprocess)."""
    payload = json.dumps({"model": str(model_dir), "dtype": dtype,
                          "prompt_ids": [list(p) for p in prompt_ids], "new_tokens": new_tokens})
    env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    try:
        proc = subprocess.run([sys.executable, "-m", "llm.model_check"], input=payload,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelCheckError(f"vLLM ({dtype}) on {model_dir} took over {RUN_TIMEOUT_S} s") from exc
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT):
            return [list(map(int, ids)) for ids in json.loads(line[len(_RESULT):])]
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    raise ModelCheckError(f"vLLM ({dtype}) could not run {model_dir} "
                          f"(exit {proc.returncode}): " + " | ".join(tail))


def check_bundled(models_path: Path, checkpoints: Mapping[str, Path],
                  reference: Mapping[str, Any], *, signature: str, candidates: Sequence[str],
                  runner: Runner = run_vllm_greedy) -> dict[str, str]:
    """The served dtype of each checkpoint on this machine, checked once per
    ``signature`` and recorded; ``ModelCheckError`` when no candidate passes."""
    served_path = models_path / SERVED_FILE
    with exclusive_lock(models_path / ".check.lock"):
        served = read_json(served_path) or {}
        mine: dict[str, Any] = dict(served.get(signature) or {})
        for name, path in checkpoints.items():
            if (mine.get(name) or {}).get("dtype"):
                continue
            mine[name] = _check_one(name, path, reference, candidates, runner, signature)
            served[signature] = mine
            write_json_atomic(served_path, served)
    return {name: mine[name]["dtype"] for name in checkpoints}


def _check_one(name: str, path: Path, reference: Mapping[str, Any], candidates: Sequence[str],
               runner: Runner, signature: str) -> dict[str, Any]:
    tried: dict[str, str] = {}
    for dtype in candidates:
        started = time.monotonic()
        got = runner(path, dtype, reference["prompt_ids"], int(reference["new_tokens"]))
        ok, detail = compare_greedy(reference, got)
        tried[dtype] = detail
        logger.info("bundled model check", extra={"model": name, "dtype": dtype, "passed": ok,
                                                   "detail": detail,
                                                   "seconds": round(time.monotonic() - started)})
        if ok:
            return {"dtype": dtype, "tried": tried, "checked_at": time.time()}
    raise ModelCheckError(
        f"the bundled {name} checkpoint does not give its reference answers (the float32 "
        f"GGUF, greedy) in any of {', '.join(candidates)} on this machine ({signature}): "
        + "; ".join(f"{d}: {t}" for d, t in tried.items()))


def served_dtype(models_path: Path, which: str, signature: str) -> str | None:
    """The dtype recorded for bundled ``which`` on this machine, or None."""
    entry = ((read_json(models_path / SERVED_FILE) or {}).get(signature) or {}).get(which)
    return entry.get("dtype") if isinstance(entry, dict) else None


def require_served_dtype(models_path: Path, which: str, signature: str) -> str:
    """``served_dtype``, or ``ConfigError`` naming the command that checks it."""
    dtype = served_dtype(models_path, which, signature)
    if dtype is None:
        raise ConfigError(
            f"the bundled {which} model has not been checked on this machine ({signature}); "
            "run `sirocco models prepare`, or set llm.dtype explicitly")
    return dtype


def load_reference(path: Path) -> dict[str, Any]:
    """The reference answers written at preparation (``reference.json``)."""
    data = read_json(path)
    if data is None:
        raise ConfigError(f"no reference answers at {path}; run `sirocco models prepare --force`")
    return data


def _main() -> None:
    """Subprocess entry: JSON job on stdin, answer ids on one marked stdout line."""
    job = json.loads(sys.stdin.read())
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=job["model"], dtype=job["dtype"], enforce_eager=True, max_model_len=1024,
              seed=0, max_num_seqs=8, kv_cache_memory_bytes=256 << 20)
    n = int(job["new_tokens"])
    params = SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in job["prompt_ids"]]
    outs = llm.generate(prompts, params, use_tqdm=False)
    print(_RESULT + json.dumps([list(o.outputs[0].token_ids) for o in outs]), flush=True)


if __name__ == "__main__":
    _main()
