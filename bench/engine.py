"""Engine benchmark: throughput vs transformers, serving overhead vs bare vLLM, prefix caching.

Three parts, one run, the bundled Mistral-architecture model, CPU:

1. **Throughput.** Sirocco's engine (``llm.engine.create_llm_engine`` ->
   ``VLLMEngine``, in-process ``AsyncLLM``) vs Hugging Face transformers
   ``generate`` on the same checkpoint, in the same dtype, in two ways: per
   request (a server holding one model serves the N chats one after another:
   what a Python user writes behind a chat endpoint; the target, >= 5x, is
   against this peer) and as one left-padded batch of all N chats (only
   possible offline, when every chat is known up front). N concurrent chats,
   greedy, at most ``--max-tokens`` new tokens. ``GenerationOptions`` has no
   ``ignore_eos``, so every side stops at the end-of-turn token and tokens/s
   counts the tokens each produced. TTFT for the engine: first text event of
   each chat, from the common start; per request: the first decoding step of
   each chat, from the common start (queueing included); for the batch: its
   first decoding step (the same for every row).
2. **Serving overhead.** Sirocco's ``/v1/chat/completions`` (``uvicorn
   --factory api.app:app_from_env``, RAG off per request, auth off in dev) vs
   the bare vLLM OpenAI server (``python -m vllm.entrypoints.openai.api_server``),
   same model and engine args, started one after the other, each driven by
   C concurrent streaming clients. Method of ``vllm bench serve``: TTFT = first
   content chunk, TPOT = (latency - TTFT) / (completion_tokens - 1) with the
   token count from ``stream_options.include_usage``.
3. **Prefix caching.** TTFT of a second question that shares a long system
   prompt + retrieved context (~1,000 tokens) with a first one, on the
   in-process engine with ``llm.enable_prefix_caching`` on and off.

    .venv/bin/python bench/engine.py            # full: 32 chats, 16 clients
    .venv/bin/python bench/engine.py --quick    # smoke check, tiny sizes

Run it on a quiet machine: the engine keeps one of the two cores for its front end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "var" / "models"
MODEL_DIR = MODELS / "smollm2-mistral"
MAX_MODEL_LEN = 2048
MAX_NUM_SEQS = 32
SERVED = "sirocco"
START_TIMEOUT_S = 600
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

TASKS = ["Write a long story about", "Explain in detail", "Write an essay about",
         "Describe step by step"]
SUBJECTS = ["a lighthouse keeper", "how a bicycle works", "the water cycle", "baking bread",
            "the history of Rome", "how computers store numbers", "a forest in autumn",
            "a holiday by the sea"]


def prompt(i: int) -> str:
    """The i-th chat question (32 distinct ones, then repeats)."""
    return f"{TASKS[(i // len(SUBJECTS)) % len(TASKS)]} {SUBJECTS[i % len(SUBJECTS)]}."


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation), 0 for no values."""
    if not values:
        return 0.0
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class Result:
    """One side of a comparison."""

    name: str
    seconds: float
    tokens: int
    ttft: list[float]
    tpot: list[float] = field(default_factory=list)
    requests: int = 0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        tpot = f"{1000 * pct(self.tpot, 50):8.1f}" if self.tpot else "       -"
        return (f"| {self.name:<52} | {self.requests:4d} | {self.tokens:6d} | {self.seconds:7.2f} "
                f"| {self.tok_s:7.1f} | {1000 * pct(self.ttft, 50):8.0f} "
                f"| {1000 * pct(self.ttft, 95):8.0f} | {tpot} |")


HEADER = (f"| {'side':<52} | reqs | tokens |  wall s |   tok/s "
          "| TTFT p50 | TTFT p95 | TPOT p50 |\n|---|---|---|---|---|---|---|---|")


def engine_dtype() -> str:
    """The dtype Sirocco's engine really serves the bundled model in on this
    machine (``llm.dtype: auto``, resolved by the prepare-time check); the peers
    get the same, so every side computes alike."""
    from llm.precision import resolve_dtype

    return resolve_dtype(settings_for())


def settings_for(*, prefix_caching: bool = True) -> Any:
    """Sirocco settings for the in-process engine (the bundled Mistral-arch model)."""
    from sirocco.settings import LLMSettings, Settings

    return Settings(data_dir=REPO / "var", models_dir=MODELS, llm=LLMSettings(
        bundled="mistral", max_model_len=MAX_MODEL_LEN, kv_cache_space_gib=1.0,
        max_num_seqs=MAX_NUM_SEQS, enable_prefix_caching=prefix_caching))


# ----------------------------------------------------------------------------- part 1


async def engine_chats(engine: Any, n: int, max_tokens: int) -> Result:
    """N concurrent chats through the ``Engine`` port; TTFT = first text event."""
    from sirocco.types import ChatMessage, GenerationOptions

    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)

    async def one(i: int, t0: float) -> tuple[float, int]:
        first = None
        tokens = 0
        async for ev in engine.generate([ChatMessage(role="user", content=prompt(i))],
                                        options=options):
            if ev.kind == "text" and first is None:
                first = time.perf_counter() - t0
            elif ev.kind == "finish" and ev.usage is not None:
                tokens = ev.usage.completion_tokens
        return (first if first is not None else time.perf_counter() - t0), tokens

    await one(0, time.perf_counter())  # warm-up: the first request pays one-off costs
    t0 = time.perf_counter()
    done = await asyncio.gather(*(one(i, t0) for i in range(n)))
    seconds = time.perf_counter() - t0
    return Result("Sirocco engine (vLLM AsyncLLM)", seconds, sum(t for _, t in done),
                  [f for f, _ in done], requests=n)


class _FirstStep:
    """A ``StoppingCriteria`` that records when the first new token exists and
    never stops anything (transformers calls it after every decoding step)."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.first is None:
            self.first = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@dataclass
class HFPeer:
    """The transformers side: the same checkpoint, in the engine's dtype."""

    tok: Any
    model: Any
    dtype: str

    @classmethod
    def load(cls) -> HFPeer:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(MODEL_DIR)
        tok.padding_side = "left"
        dtype = engine_dtype()
        model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=getattr(torch, dtype))
        return cls(tok, model.eval(), dtype)

    def text(self, i: int) -> str:
        return str(self.tok.apply_chat_template([{"role": "user", "content": prompt(i)}],
                                                add_generation_prompt=True, tokenize=False))

    def generate(self, texts: list[str], max_tokens: int) -> tuple[int, float | None]:
        """Greedy ``generate`` of one left-padded batch: (new tokens up to and
        including each row's end of turn, time of the first decoding step)."""
        import torch
        from transformers import StoppingCriteriaList

        batch = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        eos = self.tok.eos_token_id
        step = _FirstStep()
        with torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=eos,
                                      stopping_criteria=StoppingCriteriaList([step]))
        tokens = 0
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
        return tokens, step.first

    def threads(self) -> int:
        import torch

        return int(torch.get_num_threads())


def hf_batch(peer: HFPeer, n: int, max_tokens: int) -> Result:
    """transformers ``generate``: one left-padded batch of the N chats, greedy.
    Only possible offline, when every chat is known before the first starts."""
    texts = [peer.text(i) for i in range(n)]
    peer.generate(texts, 2)  # warm-up
    t0 = time.perf_counter()
    tokens, first = peer.generate(texts, max_tokens)
    seconds = time.perf_counter() - t0
    ttft = (first or t0 + seconds) - t0
    name = f"transformers generate (batch {n}, {peer.threads()} thr, {peer.dtype})"
    return Result(name, seconds, tokens, [ttft] * n, requests=n)


def hf_per_request(peer: HFPeer, n: int, max_tokens: int) -> Result:
    """transformers ``generate`` per request: N chats arrive together and a
    server holding one model serves them one after another. TTFT includes the
    wait in that queue, as a user of such a server sees it."""
    peer.generate([peer.text(0)], 2)  # warm-up
    t0 = time.perf_counter()
    tokens = 0
    ttft: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        produced, first = peer.generate([peer.text(i)], max_tokens)
        tokens += produced
        ttft.append((first or started) - t0)
    seconds = time.perf_counter() - t0
    name = f"transformers generate (per request, {peer.threads()} thr, {peer.dtype})"
    return Result(name, seconds, tokens, ttft, requests=n)


# ----------------------------------------------------------------------------- part 3

FILLER = ("Section {k} of the {org} handbook: staff in region {r} file expense reports "
          "within {d} days, hotels are refunded up to {h} EUR a night, and every project "
          "code starts with the letters ZX followed by four digits. ")


def long_prefix(engine: Any, trial: int, target_tokens: int) -> str:
    """A system prompt + retrieved context of about ``target_tokens`` tokens; the
    trial number comes first so no two trials share a cached prefix."""
    head = (f"Session {trial}. You are Sirocco, a company assistant. Answer only from "
            "the sources below and cite them as [n].\n\nSources:\n")
    parts = [head]
    k = 0
    while engine.count_tokens("".join(parts)) < target_tokens:
        parts.append(f"[{k + 1}] " + FILLER.format(k=k, org=f"Org{trial}", r=k % 7,
                                                   d=20 + k, h=100 + 5 * k) + "\n")
        k += 1
    return "".join(parts)


async def prefix_ttft(engine: Any, trials: int, target_tokens: int) -> tuple[list[float],
                                                                             list[float], int]:
    """TTFT of the first and of the second question per trial (sequential requests)."""
    from sirocco.types import ChatMessage, GenerationOptions

    options = GenerationOptions(max_tokens=4, temperature=0.0)

    async def ttft(system: str, question: str) -> float:
        t0 = time.perf_counter()
        async for ev in engine.generate([ChatMessage(role="system", content=system),
                                         ChatMessage(role="user", content=question)],
                                        options=options):
            if ev.kind == "text":
                return time.perf_counter() - t0
        return time.perf_counter() - t0

    await ttft("warm-up", "Hello?")
    first: list[float] = []
    second: list[float] = []
    size = 0
    for trial in range(trials):
        system = long_prefix(engine, trial, target_tokens)
        size = engine.count_tokens(system)
        first.append(await ttft(system, "How long do I have to file an expense report?"))
        second.append(await ttft(system, "What is the hotel limit per night?"))
    return first, second, size


async def in_process(args: argparse.Namespace) -> dict[str, Any]:
    """Parts 1 and 3 on the in-process engine (prefix caching on, then off)."""
    from llm.engine import create_llm_engine

    out: dict[str, Any] = {}
    if not args.skip_throughput or not args.skip_prefix:
        engine = create_llm_engine(settings_for(prefix_caching=True))
        try:
            if not args.skip_throughput:
                out["engine"] = await engine_chats(engine, args.chats, args.max_tokens)
            if not args.skip_prefix:
                out["prefix_on"] = await prefix_ttft(engine, args.trials, args.prefix_tokens)
        finally:
            await engine.close()
    if not args.skip_prefix:
        engine = create_llm_engine(settings_for(prefix_caching=False))
        try:
            out["prefix_off"] = await prefix_ttft(engine, args.trials, args.prefix_tokens)
        finally:
            await engine.close()
    return out


# ----------------------------------------------------------------------------- part 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(kind: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start Sirocco's server or bare vLLM's (same engine args) and wait until healthy."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIROCCO_")}
    env.update(ENV)
    if kind == "sirocco":
        env.update({
            "SIROCCO_ENV": "dev", "SIROCCO_AUTH__ENABLED": "false",
            "SIROCCO_AUTH__RATE_LIMIT_PER_MINUTE": "0",
            "SIROCCO_DATA_DIR": str(workdir / "var"), "SIROCCO_MODELS_DIR": str(MODELS),
            "SIROCCO_QDRANT__PATH": str(workdir / "qdrant"),
            "SIROCCO_LLM__BUNDLED": "mistral",
            "SIROCCO_LLM__MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "SIROCCO_LLM__KV_CACHE_SPACE_GIB": "1",
            "SIROCCO_LLM__MAX_NUM_SEQS": str(MAX_NUM_SEQS),
            "SIROCCO_LLM__MAX_INFLIGHT": "256",
        })
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.app:app_from_env",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        health = "/healthz"
    else:
        # What Sirocco's engine_args_from_settings passes for the settings above.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(MODEL_DIR), "--served-model-name", SERVED, "--dtype", engine_dtype(),
               "--seed", "0", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager",
               "--enable-prefix-caching", "--max-num-seqs", str(MAX_NUM_SEQS),
               "--host", "127.0.0.1", "--port", str(port)]
        health = "/health"
    log = workdir / f"{kind}-server.log"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(f"{kind} server did not come up:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(base + health, timeout=2).status_code == 200:
                return proc, base, log
        except httpx.TransportError:
            pass
        time.sleep(1)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started, and its children (its own process group)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # the engine's worker processes, if the parent left them behind
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def drive(base: str, kind: str, clients: int, requests: int,
                max_tokens: int) -> Result:
    """``requests`` streaming chats from ``clients`` concurrent clients (bench-serve style)."""
    import httpx

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    ttfts: list[float] = []
    tpots: list[float] = []
    tokens = 0

    async def one(client: httpx.AsyncClient, i: int) -> tuple[float, float, int]:
        body: dict[str, Any] = {
            "model": SERVED, "messages": [{"role": "user", "content": prompt(i)}],
            "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
        if kind == "sirocco":
            body["sirocco"] = {"rag": False}
        t0 = time.perf_counter()
        first = None
        completion = 0
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"{kind}: HTTP {r.status_code}: {(await r.aread())[:500]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"{kind}: {chunk['error']}")
                choices = chunk.get("choices") or []
                if first is None and choices and (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter() - t0
                if chunk.get("usage"):
                    completion = chunk["usage"]["completion_tokens"]
        latency = time.perf_counter() - t0
        ttft = first if first is not None else latency
        return ttft, (latency - ttft) / max(completion - 1, 1), completion

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            ttft, tpot, n = await one(client, i)
            ttfts.append(ttft)
            if n > 1:
                tpots.append(tpot)
            tokens += n

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one(client, 0)  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        seconds = time.perf_counter() - t0
    name = ("Sirocco /v1/chat/completions" if kind == "sirocco"
            else "bare vLLM api_server")
    return Result(name, seconds, tokens, ttfts, tpots, requests=requests)


def serving(args: argparse.Namespace) -> dict[str, Result]:
    """Part 2: each server in turn (never both at once), same workload."""
    out: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="sirocco-bench-") as tmp:
        for kind in ("vllm", "sirocco"):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            started = time.perf_counter()
            proc, base, log = start_server(kind, workdir)
            print(f"{kind} server up in {time.perf_counter() - started:.0f} s", flush=True)
            try:
                out[kind] = asyncio.run(drive(base, kind, args.clients, args.requests,
                                              args.max_tokens))
            except Exception:
                print(log.read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                stop_server(proc)
    return out


# ----------------------------------------------------------------------------- report


def report(args: argparse.Namespace, inproc: dict[str, Any], peers: dict[str, Any],
           served: dict[str, Result]) -> None:
    print(f"\nmodel: {MODEL_DIR.name} ({engine_dtype()}, CPU, {os.cpu_count()} cores, "
          f"reserved cores {os.environ.get('VLLM_CPU_NUM_OF_RESERVED_CPU', 'vLLM default')}), "
          f"max_model_len {MAX_MODEL_LEN}, KV cache 1 GiB, enforce_eager, "
          f"max_num_seqs {MAX_NUM_SEQS}, greedy")
    sides = [inproc.get("engine"), peers.get("per_request"), peers.get("batch")]
    if any(sides):
        print(f"\n## 1. Throughput: {args.chats} concurrent chats x <= {args.max_tokens} tokens"
              "\n" + HEADER)
        for r in sides:
            if r is not None:
                print(r.row())
        e = inproc.get("engine")
        for key, target in (("per_request", " (target >= 5x)"), ("batch", "")):
            p = peers.get(key)
            if e is not None and p is not None:
                print(f"ratio tok/s engine / {p.name}: {e.tok_s / p.tok_s:.2f}x{target}; "
                      f"TTFT p50 peer/engine: {pct(p.ttft, 50) / pct(e.ttft, 50):.2f}x")
    if served:
        print(f"\n## 2. Serving: {args.clients} streaming clients, {args.requests} requests "
              f"x <= {args.max_tokens} tokens\n" + HEADER)
        for r in served.values():
            print(r.row())
        if len(served) == 2:
            s, v = served["sirocco"], served["vllm"]
            tpot = pct(s.tpot, 50) / pct(v.tpot, 50) - 1 if v.tpot else 0.0
            print(f"overhead: throughput {100 * (1 - s.tok_s / v.tok_s):+.1f}%, "
                  f"TTFT p50 {100 * (pct(s.ttft, 50) / pct(v.ttft, 50) - 1):+.1f}%, "
                  f"TTFT p95 {100 * (pct(s.ttft, 95) / pct(v.ttft, 95) - 1):+.1f}%, "
                  f"TPOT p50 {100 * tpot:+.1f}% (target <= 20%)")
    if "prefix_on" in inproc:
        print(f"\n## 3. Prefix caching: {args.trials} trials, sequential requests\n"
              "| prefix caching | prefix tokens | TTFT 1st question p50 ms "
              "| TTFT 2nd question p50 ms |\n|---|---|---|---|")
        for label, key in (("on", "prefix_on"), ("off", "prefix_off")):
            first, second, size = inproc[key]
            print(f"| {label} | {size} | {1000 * statistics.median(first):.0f} "
                  f"| {1000 * statistics.median(second):.0f} |")
        on, off = inproc["prefix_on"][1], inproc["prefix_off"][1]
        print(f"2nd-question TTFT off/on: {statistics.median(off) / statistics.median(on):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check")
    parser.add_argument("--chats", type=int, default=32, help="part 1: concurrent chats")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--clients", type=int, default=16, help="part 2: concurrent clients")
    parser.add_argument("--requests", type=int, default=32, help="part 2: requests in all")
    parser.add_argument("--trials", type=int, default=5, help="part 3: prefix trials")
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--skip-throughput", action="store_true", help="skip part 1")
    parser.add_argument("--skip-peer", action="store_true", help="part 1 without transformers")
    parser.add_argument("--skip-serving", action="store_true", help="skip part 2")
    parser.add_argument("--skip-prefix", action="store_true", help="skip part 3")
    parser.add_argument("--reserved-cores", type=int, default=None,
                        help="VLLM_CPU_NUM_OF_RESERVED_CPU for every vLLM engine here "
                             "(vLLM's default keeps one core free of its OpenMP threads)")
    args = parser.parse_args()
    if args.reserved_cores is not None:
        ENV["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(args.reserved_cores)
    if args.quick:
        args.chats, args.max_tokens, args.clients, args.requests = 4, 16, 2, 4
        args.trials, args.prefix_tokens = 1, 300
    logging.basicConfig(level=logging.WARNING)
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    # vLLM logs INFO from three processes; its own knob reaches all of them.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if not (MODELS / "prepared.json").exists():
        sys.exit("bundled models not prepared: run `sirocco models prepare` (make models)")

    started = time.perf_counter()
    inproc = asyncio.run(in_process(args))
    peers: dict[str, Any] = {}
    if not args.skip_throughput and not args.skip_peer:
        peer = HFPeer.load()
        peers["per_request"] = hf_per_request(peer, args.chats, args.max_tokens)
        peers["batch"] = hf_batch(peer, args.chats, args.max_tokens)
        del peer
    served = {} if args.skip_serving else serving(args)
    report(args, inproc, peers, served)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
