"""Hierarchical merging of a whole region graph from its edges' contact statistics (the merge scores of step 3).

waterz merges the fragments of a volume greedily: the edge of the lowest score merges its two regions, the edges of
the merged region to a common neighbour are combined (their affinity histograms, or sums and counts, are added) and
scored again, and so on up to the threshold. An edge's ``merge_score`` is the score of the merge that first put
both its fragments into one region. Run per block, that history depends on the block: a fragment across the face is
cropped to the block's context, so the edges at a face get other scores than the same edges inside a block (a seam).
Here the statistics of every edge are collected blockwise (:func:`lsd_nm.contacts.contacts_in_block`, each edge
once, with all its contacts) and merged once over the whole graph (:func:`merge_region_graph`) with waterz's algorithm: a queue of 256
score bins, first in first out within a bin, stale edges scored again when they come up, the same scores
(``OneMinus<HistogramQuantileAffinity<…, Q, …, 256, initmax>>``, ``OneMinus<MeanAffinity>``); so the scores do not
depend on how the volume was cut into blocks, nor on the number of workers.

Memory: the merge holds a 256-bin histogram per edge (1 KiB; 1 GiB per million edges) for the histogram merge
functions, 16 bytes per edge for ``mean``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict, List

from .contacts import BINS, Contacts


def parse_scoring(scoring: str) -> tuple[int, int, bool]:
    """``(kind, quantile, initmax)`` of a waterz scoring function of :func:`lsd_nm.agglomerate.scoring_function`
    (kind 0: histogram quantile, 1: mean)."""
    if scoring == "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>":
        return 1, 0, False
    inner = scoring.removeprefix("OneMinus<HistogramQuantileAffinity<RegionGraphType, ").removesuffix(">>")
    quantile, _, bins, initmax = (x.strip() for x in inner.split(","))
    if int(bins) != BINS:
        raise ValueError(f"scoring function with {bins} bins: only {BINS} are supported")
    return 0, int(quantile), initmax == "true"


def merge_region_graph(nodes: np.ndarray, contacts: Contacts, scoring: str) -> np.ndarray:
    """The merge score of every edge of ``contacts`` (float32; NaN: never merged below 1), from one hierarchical
    merge of the whole graph (waterz's, thresholds [0, 1]).

    Args:
        nodes: the fragment ids (every edge's ids among them).
        contacts: every edge of the graph with its statistics (:func:`lsd_nm.contacts.contacts_in_block`, concatenated).
        scoring: the waterz scoring function.
    """
    nodes = np.unique(np.asarray(nodes, np.uint64))
    if len(contacts.edges) == 0:
        return np.zeros(0, np.float32)
    eu = np.searchsorted(nodes, contacts.edges[:, 0]).astype(np.int64)
    ev = np.searchsorted(nodes, contacts.edges[:, 1]).astype(np.int64)
    known = (eu < len(nodes)) & (ev < len(nodes))
    if not known.all() or np.any(nodes[eu] != contacts.edges[:, 0]) or np.any(nodes[ev] != contacts.edges[:, 1]):
        raise ValueError("an edge of the contacts names a fragment that is not a node")
    kind, quantile, initmax = parse_scoring(scoring)
    totals = np.add.reduceat(contacts.counts.astype(np.int64), contacts.starts[:-1])  # every edge has a contact
    history_a, history_b, history_score, merged = _merge(
        len(nodes), eu.copy(), ev.copy(), contacts.starts, contacts.bins.astype(np.int64),
        contacts.counts.astype(np.int64), contacts.sums.astype(np.float64), totals.astype(np.int64), kind,
        quantile, initmax,
    )  # fmt: skip
    return _pair_scores(len(nodes), history_a[:merged], history_b[:merged], history_score[:merged], eu, ev)


@njit(cache=True)
def _score(kind, quantile, histograms, sums, totals, e):
    if kind == 1:
        mean = np.float32(sums[e] / totals[e]) if totals[e] > 0 else np.float32(0)
        return np.float32(1) - mean
    total = 0
    for i in range(256):
        total += histograms[e, i]
    pivot = quantile * total // 100 + 1
    cumulative = 0
    b = 0
    for b in range(256):
        cumulative += histograms[e, b]
        if cumulative >= pivot:
            break
    return np.float32(1) - np.float32((b + 0.5) / 256)


@njit(cache=True)
def _queue_bin(score):
    if not score > 0:
        return 0
    if score >= 1:
        return 255
    return min(int(score * 256), 255)


@njit(cache=True)
def _merge(n, eu, ev, starts, bins, counts, sums, totals, kind, quantile, initmax):
    """waterz's IterativeRegionMerging (BinQueue of 256, thresholds [0, 1]) on a graph; returns the merge history
    (a, b, score; b merged into a) and its length."""
    num_edges = len(eu)
    sums = sums.copy()
    totals = totals.copy()
    histograms = np.zeros((num_edges if kind == 0 else 1, 256), np.int64)
    if kind == 0:
        for e in range(num_edges):
            if initmax:
                histograms[e, bins[starts[e + 1] - 1]] = 1  # only the largest affinity, once
            else:
                for i in range(starts[e], starts[e + 1]):
                    histograms[e, bins[i]] += counts[i]
    adjacency = List()
    for _ in range(n):
        adjacency.append(Dict.empty(key_type=types.int64, value_type=types.int64))
    for e in range(num_edges):
        adjacency[eu[e]][ev[e]] = e
        adjacency[ev[e]][eu[e]] = e
    scores = np.zeros(num_edges, np.float32)
    stale = np.zeros(num_edges, np.bool_)
    deleted = np.zeros(num_edges, np.bool_)
    # the queue: 256 first-in-first-out bins as linked lists in one pool
    head = np.full(256, -1, np.int64)
    tail = np.full(256, -1, np.int64)
    capacity = 2 * num_edges + 16
    item = np.empty(capacity, np.int64)
    following = np.empty(capacity, np.int64)
    used = 0
    lowest = -1
    history_a = np.empty(max(n - 1, 1), np.int64)
    history_b = np.empty(max(n - 1, 1), np.int64)
    history_score = np.empty(max(n - 1, 1), np.float32)
    merged = 0
    pending = np.arange(num_edges)  # initial scores, in edge order
    for e in pending:
        s = _score(kind, quantile, histograms, sums, totals, e)
        scores[e] = s
        b = _queue_bin(s)
        if used == capacity:
            capacity *= 2
            item = np.concatenate((item, np.empty(capacity - len(item), np.int64)))
            following = np.concatenate((following, np.empty(capacity - len(following), np.int64)))
        item[used], following[used] = e, -1
        if tail[b] == -1:
            head[b] = used
        else:
            following[tail[b]] = used
        tail[b] = used
        used += 1
        lowest = b if lowest == -1 else min(lowest, b)
    while lowest != -1:
        e = item[head[lowest]]
        s = scores[e]
        if s >= 1.0:
            break
        # pop
        head[lowest] = following[head[lowest]]
        if head[lowest] == -1:
            tail[lowest] = -1
            while lowest < 256 and head[lowest] == -1:
                lowest += 1
            if lowest == 256:
                lowest = -1
        if deleted[e]:
            continue
        if stale[e]:
            s = _score(kind, quantile, histograms, sums, totals, e)
            scores[e] = s
            stale[e] = False
            b = _queue_bin(s)
            if used == capacity:
                capacity *= 2
                item = np.concatenate((item, np.empty(capacity - len(item), np.int64)))
                following = np.concatenate((following, np.empty(capacity - len(following), np.int64)))
            item[used], following[used] = e, -1
            if tail[b] == -1:
                head[b] = used
            else:
                following[tail[b]] = used
            tail[b] = used
            used += 1
            lowest = b if lowest == -1 else min(lowest, b)
            continue
        a, b = eu[e], ev[e]
        neighbours = np.empty(len(adjacency[b]), np.int64)
        their_edges = np.empty(len(adjacency[b]), np.int64)
        k = 0
        for neighbour, edge in adjacency[b].items():
            neighbours[k], their_edges[k] = neighbour, edge
            k += 1
        for k in range(len(neighbours)):
            neighbour, edge = neighbours[k], their_edges[k]
            if edge == e:
                continue
            del adjacency[neighbour][b]
            if neighbour in adjacency[a]:
                other = adjacency[a][neighbour]
                if scores[edge] > scores[other]:  # combine into the cheaper edge, which must be scored again
                    source, target = edge, other
                else:
                    source, target = other, edge
                if kind == 0:
                    histograms[target] += histograms[source]
                    histograms[source] = 0
                sums[target] += sums[source]
                totals[target] += totals[source]
                deleted[source] = True
                stale[target] = True
                edge = target
            adjacency[a][neighbour] = edge
            adjacency[neighbour][a] = edge
            eu[edge], ev[edge] = min(a, neighbour), max(a, neighbour)
        del adjacency[a][b]
        adjacency[b].clear()
        history_a[merged], history_b[merged], history_score[merged] = a, b, s
        merged += 1
    return history_a, history_b, history_score, merged


@njit(cache=True)
def _pair_scores(n, history_a, history_b, history_score, eu, ev):
    """For each pair (eu, ev), the score of the merge of the history that first put both into one region (NaN if
    none did): union by rank without path compression, so the latest attachment below the pair's common ancestor
    is that merge."""
    parent = np.arange(n)
    rank = np.zeros(n, np.int64)
    attached_at = np.full(n, -1, np.int64)
    attached_score = np.zeros(n, np.float32)
    for t in range(len(history_a)):
        ra, rb = history_a[t], history_b[t]
        while parent[ra] != ra:
            ra = parent[ra]
        while parent[rb] != rb:
            rb = parent[rb]
        if ra == rb:
            continue
        if rank[ra] < rank[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        attached_at[rb] = t
        attached_score[rb] = history_score[t]
        if rank[ra] == rank[rb]:
            rank[ra] += 1
    depth = np.zeros(n, np.int64)
    for x in range(n):
        d, y = 0, x
        while parent[y] != y:
            y = parent[y]
            d += 1
        depth[x] = d
    out = np.full(len(eu), np.nan, np.float32)
    for i in range(len(eu)):
        x, y = eu[i], ev[i]
        latest = -1
        score = np.float32(np.nan)
        while depth[x] > depth[y]:
            if attached_at[x] > latest:
                latest, score = attached_at[x], attached_score[x]
            x = parent[x]
        while depth[y] > depth[x]:
            if attached_at[y] > latest:
                latest, score = attached_at[y], attached_score[y]
            y = parent[y]
        while x != y and parent[x] != x:
            for z in (x, y):
                if attached_at[z] > latest:
                    latest, score = attached_at[z], attached_score[z]
            x, y = parent[x], parent[y]
        if x == y:
            out[i] = score
    return out
