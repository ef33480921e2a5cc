"""``mtdesk bench retrieval`` and ``mtdesk bench retrieval-quality``.

``retrieval`` measures a retrieval shard as the conversation shards see it: N clustered
unit vectors of dimension D go into one :class:`RetrievalShard` Ray actor (HNSW past the
shard's threshold, exact below), then queries go through the batching
:class:`ActorShardClient`: one at a time (p50/p99 per query) and many at once
(queries/s with batching). Recall@10 is against exact search (a FAISS flat index).
JSON keys: ``chunks``, ``dim``, ``index``, ``build_s``, ``bytes_per_chunk``, ``qps``,
``qps_sequential``, ``p50_ms``, ``p99_ms``, ``recall_at_10``.

``retrieval-quality`` scores embedders on the sample knowledge base's 60 labelled
questions (hit@1, hit@5, MRR): the offline lexical embedder, the local MiniLM (when the
extra is installed), a provider embedder through the fake OpenAI-compatible server, and
BM25 as a baseline.

Top-level imports stay light: this module is imported on every ``mtdesk`` call.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def register_bench(sub: Any) -> None:
    p = sub.add_parser("retrieval", help="retrieval shard: build, latency through the actor, recall",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chunks", type=int, default=200_000, help="vectors in the index (default 200000)")
    p.add_argument("--dim", type=int, default=384, help="vector dimension (default 384)")
    p.add_argument("--queries", type=int, default=2000, help="queries to time (default 2000)")
    p.add_argument("--concurrency", type=int, default=64, help="queries in flight for qps (default 64)")
    p.add_argument("--hnsw-threshold", type=int, default=20_000, help="exact search below this size")
    p.add_argument("--json", dest="json_path", help="write the figures as JSON here")
    p.add_argument("--report", metavar="DIR", help="write a report to DIR: JSON, a Markdown "
                   "table and PNG plots (latency distribution, queries per second)")
    p.set_defaults(handler=_run_perf)
    q = sub.add_parser("retrieval-quality", help="hit@1/hit@5 of the embedders on the sample set",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--no-local", action="store_true", help="skip the local MiniLM embedder")
    q.add_argument("--json", dest="json_path", help="write the scores as JSON here")
    q.add_argument("--report", metavar="DIR", help="write a report to DIR: JSON, a Markdown "
                   "table and a PNG plot of the scores per embedder")
    q.set_defaults(handler=_run_quality)


def clustered(n: int, dim: int, seed: int, centers: int = 256, latent: int = 32) -> Any:
    """Unit vectors shaped like text embeddings: topics (clusters) in a low-dimensional
    latent space, spread into ``dim`` dimensions, plus a little noise. (Isotropic noise in
    all 384 dimensions would make every neighbour equally far, which real text is not.)"""
    import numpy as np

    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, latent)).astype(np.float32)
    z = c[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, latent)).astype(np.float32)
    w = np.random.default_rng(12345).standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    x = z @ w + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def _perf(args: argparse.Namespace) -> dict[str, Any]:
    import uuid

    import faiss
    import numpy as np

    from mtdesk.actors import rayapi
    from mtdesk.actors.retrieval_deploy import ActorShardClient, create_retrieval_shards
    from mtdesk.core.settings import Settings
    from mtdesk.retrieval.index_slice import SearchRequest

    n, dim, k = args.chunks, args.dim, 10
    print(f"generating {n} x {dim} clustered vectors and {args.queries} queries ...", flush=True)
    data = clustered(n, dim, seed=1)
    base = data[np.random.default_rng(2).integers(0, n, args.queries)]
    noise = 0.02 * np.random.default_rng(3).standard_normal(base.shape).astype(np.float32)
    queries = base + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, truth = exact.search(queries, k)
    truth += 1  # our chunk ids start at 1
    del exact

    started_ray = rayapi.init_local()
    settings = Settings(data_dir="/tmp/mtdesk-bench-retrieval", kb_shard_chunks=max(n, 1))
    (handle,) = create_retrieval_shards(
        settings, 1, namespace=f"bench-{uuid.uuid4().hex}", num_cpus=0,
        hnsw_threshold=args.hnsw_threshold, snapshot_every_s=1e9,
    )
    client = ActorShardClient(handle)
    try:
        await handle.ping.remote()
        print("building the index in the shard actor ...", flush=True)
        t0 = time.perf_counter()
        ids = np.arange(1, n + 1, dtype=np.int64)
        step = 50_000
        for start in range(0, n, step):
            await client.add_vectors("bench", ids[start : start + step], data[start : start + step])
        build_s = time.perf_counter() - t0
        stats = await handle.stats.remote()
        part = stats["tenants"]["bench"]

        requests = [SearchRequest("bench", q.tobytes(), k) for q in queries]
        for r in requests[:50]:  # warm up
            await client.search_batch([r])
        latencies: list[float] = []
        found: list[list[int]] = []
        for r in requests:
            t = time.perf_counter()
            (hits,) = await client.search_batch([r])
            latencies.append((time.perf_counter() - t) * 1000)
            found.append([h.id for h in hits])
        recall = float(np.mean([len(set(f) & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)]))

        import asyncio

        sem = asyncio.Semaphore(args.concurrency)

        async def one(r: SearchRequest) -> None:
            async with sem:
                await client.search_batch([r])

        calls_before = client.calls
        t1 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        qps = len(requests) / (time.perf_counter() - t1)
        result = {
            "chunks": n, "dim": dim, "index": part["kind"], "build_s": round(build_s, 2),
            "bytes_per_chunk": round(part["bytes"] / n, 1),
            "qps": round(qps, 1), "qps_sequential": round(1000 / (sum(latencies) / len(latencies)), 1),
            "batched_calls": client.calls - calls_before,
            "p50_ms": round(_pct(latencies, 50), 3), "p99_ms": round(_pct(latencies, 99), 3),
            "recall_at_10": round(recall, 4), "queries": len(requests), "concurrency": args.concurrency,
            "series": {"latency_ms_percentiles": [round(_pct(latencies, q), 3) for q in range(101)]},
        }
    finally:
        rayapi.kill(handle)
        if started_ray:
            rayapi.shutdown()
    return result


def _run_perf(args: argparse.Namespace) -> int:
    import asyncio

    result = asyncio.run(_perf(args))
    _report({k: v for k, v in result.items() if k != "series"}, None)
    _report(result, args.json_path, show=False)
    if getattr(args, "report", None):
        from mtdesk.benchmarks.report import Plot, write

        keys = ("chunks", "dim", "index", "build_s", "bytes_per_chunk", "qps",
                "qps_sequential", "p50_ms", "p99_ms", "recall_at_10")
        write(args.report, "retrieval", result, header=("figure", "value"),
              rows=[(k.replace("_", " "), result[k]) for k in keys], plots=[
                  Plot("latency", "Search latency through the actor, one query at a time",
                       "line", "percentile", "ms",
                       {result["index"]: (list(range(101)),
                                          result["series"]["latency_ms_percentiles"])}, logy=True),
                  Plot("qps", "Queries per second", "bars", "mode", "queries / s",
                       {result["index"]: (["one at a time", f"{result['concurrency']} in flight"],
                                          [result["qps_sequential"], result["qps"]])})])
    return 0


async def _quality(args: argparse.Namespace) -> dict[str, Any]:
    from mtdesk.fakes.llm import FakeLLM
    from mtdesk.retrieval.embedders import LexicalEmbedder, LocalEmbedder, ProviderEmbedder
    from mtdesk.retrieval.evaluate import (
        evaluate_bm25,
        evaluate_embedder,
        evaluate_extractive,
        sample_chunks,
    )

    chunks = sample_chunks()
    scores = [evaluate_bm25(chunks), await evaluate_embedder(LexicalEmbedder(), chunks)]
    answers = [await evaluate_extractive(LexicalEmbedder(), chunks)]
    if not args.no_local and LocalEmbedder.available():
        scores.append(await evaluate_embedder(LocalEmbedder(), chunks))
        answers.append(await evaluate_extractive(LocalEmbedder(), chunks))
    async with FakeLLM(dimension=256) as fake:
        provider = ProviderEmbedder("fake", "fake-embed", fake.base_url, "key")
        scores.append(await evaluate_embedder(provider, chunks))
        await provider.aclose()
    return {"chunks": len(chunks), "scores": [
        {"embedder": s.name, "questions": s.questions, "hit_at_1": s.hit_at_1,
         "hit_at_5": s.hit_at_5, "mrr": s.mrr} for s in scores
    ], "extractive": [
        {"embedder": a.name, "right": a.right, "wrong": a.wrong, "fallback": a.fallback,
         "off_topic_refused": a.off_topic_refused, "off_topic": a.off_topic} for a in answers
    ]}


def _run_quality(args: argparse.Namespace) -> int:
    import asyncio

    result = asyncio.run(_quality(args))
    print(f"{'embedder':<32} {'hit@1':>6} {'hit@5':>6} {'MRR':>6}")
    for s in result["scores"]:
        print(f"{s['embedder']:<32} {s['hit_at_1']:>6.3f} {s['hit_at_5']:>6.3f} {s['mrr']:>6.3f}")
    print("\nextractive answers (no LLM): right / wrong / \"don't know\" of the labelled questions;"
          " off-topic questions refused")
    for a in result["extractive"]:
        print(f"{a['embedder']:<32} {a['right']:>3} / {a['wrong']} / {a['fallback']}   "
              f"{a['off_topic_refused']}/{a['off_topic']}")
    _report(result, args.json_path, show=False)
    if getattr(args, "report", None):
        from mtdesk.benchmarks.report import Plot, write

        scores = result["scores"]
        names = [sc["embedder"] for sc in scores]
        write(args.report, "retrieval-quality", result,
              header=("embedder", "hit@1", "hit@5", "MRR"),
              rows=[(sc["embedder"], sc["hit_at_1"], sc["hit_at_5"], sc["mrr"]) for sc in scores],
              plots=[Plot("scores", "Retrieval quality on the sample set", "bars", "embedder",
                          "score", {m: (names, [sc[k] for sc in scores])
                                    for m, k in (("hit@1", "hit_at_1"), ("hit@5", "hit_at_5"),
                                                 ("MRR", "mrr"))})])
    return 0


def _report(result: dict[str, Any], path: str | None, *, show: bool = True) -> None:
    if show:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
