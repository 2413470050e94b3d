"""Hierarchical merging of a whole region graph from its edges' contact statistics (the merge scores of step 3).

waterz merges the fragments of a volume greedily: the edge of the lowest score merges its two regions, the edges of
the merged region to a common neighbour are combined (their affinity histograms, or sums and counts, are added) and
scored again, and so on up to the threshold. An edge's ``merge_score`` is the score of the merge that first put
both its fragments into one region. Run per block, that history depends on the block: a fragment across the face is
cropped to the block's context, so the edges at a face get other scores than the same edges inside a block (a seam).
Here the statistics of every edge are collected blockwise (:func:`lsd_nm.contacts.contacts_in_block`, each edge
once, with all its contacts) and merged once over the whole graph (:func:`merge_region_graph`) with waterz's
algorithm: a queue of 256 score bins, first in first out within a bin, stale edges scored again when they come up,
the same scores
(``OneMinus<HistogramQuantileAffinity<…, Q, …, 256, initmax>>``, ``OneMinus<MeanAffinity>``); so the scores do not
depend on how the volume was cut into blocks, nor on the number of workers.

Memory: the histograms are sparse — only an edge's non-zero bins, one byte each with a 4-byte count, in one pool
over all edges (merging two edges merges their sorted bins; a histogram has at most 256 of them) — so an edge
costs 5 bytes per distinct affinity bin among its contacts rather than a dense histogram's 1-2 KiB
(``benchmarks/RESULTS.md`` has the bytes per edge and peak memory measured).
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


def merge_region_graph(nodes: np.ndarray, contacts: Contacts, scoring: str, spare: float = 1.0) -> np.ndarray:
    """The merge score of every edge of ``contacts`` (float32; NaN: never merged below 1), from one hierarchical
    merge of the whole graph (waterz's, thresholds [0, 1]).

    Args:
        nodes: the fragment ids (every edge's ids among them).
        contacts: every edge of the graph with its statistics (:func:`lsd_nm.contacts.contacts_in_block`, concatenated).
        scoring: the waterz scoring function.
        spare: room for combined histograms beyond the contacts' bins at the start, as a multiple of them (the pool
            grows and is compacted as needed; 0 makes it do so from the first merge).
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
        len(nodes), eu.copy(), ev.copy(), contacts.starts, contacts.bins.astype(np.uint8),
        contacts.counts.astype(np.uint32), contacts.sums.astype(np.float64), totals.astype(np.int64), kind,
        quantile, initmax, float(spare),
    )  # fmt: skip
    return _pair_scores(len(nodes), history_a[:merged], history_b[:merged], history_score[:merged], eu, ev)


@njit(cache=True)
def _score(kind, quantile, first, length, pool_bins, pool_counts, sums, totals, e):
    if kind == 1:
        mean = np.float32(sums[e] / totals[e]) if totals[e] > 0 else np.float32(0)
        return np.float32(1) - mean
    total = 0
    for i in range(first[e], first[e] + length[e]):
        total += pool_counts[i]
    pivot = quantile * total // 100 + 1
    cumulative = 0
    b = 0
    for i in range(first[e], first[e] + length[e]):
        b = pool_bins[i]
        cumulative += pool_counts[i]
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
def _merge(n, eu, ev, starts, bins, counts, sums, totals, kind, quantile, initmax, spare):
    """waterz's IterativeRegionMerging (BinQueue of 256, thresholds [0, 1]) on a graph; returns the merge history
    (a, b, score; b merged into a) and its length."""
    num_edges = len(eu)
    sums = sums.copy()
    totals = totals.copy()
    # the histograms, sparse: edge e's non-zero bins (ascending) are pool_bins[first[e]:first[e] + length[e]]
    # with their counts, in a slot of room[e] entries; a combined histogram that outgrows its slot moves to the
    # end of the pool, which is compacted when less than half of it is in use
    first = np.zeros(num_edges, np.int64)
    length = np.zeros(num_edges, np.int64)
    room = np.zeros(num_edges, np.int64)
    if kind == 0 and initmax:
        size = num_edges + int(spare * num_edges) + 1
        pool_bins = np.empty(size, np.uint8)
        pool_counts = np.empty(size, np.uint32)
        for e in range(num_edges):
            first[e], length[e], room[e] = e, 1, 1
            pool_bins[e], pool_counts[e] = bins[starts[e + 1] - 1], 1  # only the largest affinity, once
        pool_used = num_edges
    elif kind == 0:
        size = len(bins) + int(spare * len(bins)) + 1
        pool_bins = np.empty(size, np.uint8)
        pool_counts = np.empty(size, np.uint32)
        pool_bins[: len(bins)] = bins
        pool_counts[: len(bins)] = counts
        for e in range(num_edges):
            first[e], length[e], room[e] = starts[e], starts[e + 1] - starts[e], starts[e + 1] - starts[e]
        pool_used = len(bins)
    else:
        pool_bins = np.empty(1, np.uint8)
        pool_counts = np.empty(1, np.uint32)
        pool_used = 0
    live = pool_used
    scratch_bins = np.empty(512, np.uint8)
    scratch_counts = np.empty(512, np.int64)
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
        s = _score(kind, quantile, first, length, pool_bins, pool_counts, sums, totals, e)
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
            s = _score(kind, quantile, first, length, pool_bins, pool_counts, sums, totals, e)
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
                    # the sum of two sparse histograms, through a scratch buffer
                    i, j, k_end = first[target], first[source], 0
                    i_end, j_end = first[target] + length[target], first[source] + length[source]
                    while i < i_end or j < j_end:
                        if j == j_end or (i < i_end and pool_bins[i] < pool_bins[j]):
                            scratch_bins[k_end], scratch_counts[k_end] = pool_bins[i], pool_counts[i]
                            i += 1
                        elif i == i_end or pool_bins[j] < pool_bins[i]:
                            scratch_bins[k_end], scratch_counts[k_end] = pool_bins[j], pool_counts[j]
                            j += 1
                        else:
                            scratch_bins[k_end] = pool_bins[i]
                            scratch_counts[k_end] = np.int64(pool_counts[i]) + np.int64(pool_counts[j])
                            i += 1
                            j += 1
                        if scratch_counts[k_end] > 4294967295:
                            raise OverflowError("an edge's histogram bin exceeds 2^32 voxel pairs")
                        k_end += 1
                    live -= length[source] + length[target]
                    length[source] = 0
                    room[source] = 0
                    if k_end > room[target]:
                        if pool_used + k_end > len(pool_bins):
                            if 2 * live < pool_used:  # compact: keep the live histograms only
                                room[target] = 0
                                length[target] = 0
                                written = 0
                                for x in np.argsort(first):  # in pool order: a copy never overwrites a later one
                                    if length[x] > 0:
                                        for y in range(length[x]):
                                            pool_bins[written + y] = pool_bins[first[x] + y]
                                            pool_counts[written + y] = pool_counts[first[x] + y]
                                        first[x], room[x] = written, length[x]
                                        written += length[x]
                                    else:
                                        room[x] = 0
                                pool_used = written
                            if pool_used + k_end > len(pool_bins):
                                grown = 2 * len(pool_bins) + k_end
                                new_bins = np.empty(grown, np.uint8)
                                new_counts = np.empty(grown, np.uint32)
                                new_bins[:pool_used] = pool_bins[:pool_used]
                                new_counts[:pool_used] = pool_counts[:pool_used]
                                pool_bins, pool_counts = new_bins, new_counts
                        first[target] = pool_used
                        room[target] = min(2 * k_end, 256)
                        pool_used = min(pool_used + room[target], len(pool_bins))
                        room[target] = pool_used - first[target]
                    for y in range(k_end):
                        pool_bins[first[target] + y] = scratch_bins[y]
                        pool_counts[first[target] + y] = scratch_counts[y]
                    length[target] = k_end
                    live += k_end
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
