namespace LlmBuild.Core.Codegen;

/// <summary>A buffer to place: its size and the first and last instruction (inclusive) during which it is live.</summary>
public readonly record struct LiveInterval(long Size, int Start, int End)
{
    public bool OverlapsInTime(LiveInterval other) => Start <= other.End && other.Start <= End;
}

/// <summary>
/// Liveness-based placement of a net's intermediates in its ctx (neuron) memory: buffers whose lifetimes overlap never
/// share bytes; buffers that are never live together may. Greedy by size (largest first, then earliest start), each at
/// the lowest aligned offset that fits between the buffers already placed and live at the same time. Deterministic.
/// </summary>
public static class MemoryPlanner
{
    /// <summary>Returns each buffer's offset (same order as <paramref name="buffers"/>) and the total size needed.</summary>
    public static long[] Plan(IReadOnlyList<LiveInterval> buffers, long alignment, out long totalSize)
    {
        if (alignment <= 0) throw new ArgumentOutOfRangeException(nameof(alignment));
        var offsets = new long[buffers.Count];
        var order = Enumerable.Range(0, buffers.Count)
            .OrderByDescending(i => buffers[i].Size).ThenBy(i => buffers[i].Start).ThenBy(i => i).ToArray();
        var placed = new List<int>();
        totalSize = 0;
        foreach (int i in order)
        {
            var b = buffers[i];
            if (b.End < b.Start) throw new ArgumentException($"Buffer {i} ends (instruction {b.End}) before it starts ({b.Start}).", nameof(buffers));
            long size = AlignUp(Math.Max(b.Size, 1), alignment);
            var busy = placed.Where(j => buffers[j].OverlapsInTime(b))
                .Select(j => (Start: offsets[j], End: offsets[j] + AlignUp(Math.Max(buffers[j].Size, 1), alignment)))
                .OrderBy(r => r.Start).ToList();
            long offset = 0;
            foreach (var (start, end) in busy)
            {
                if (offset + size <= start) break;
                offset = Math.Max(offset, end);
            }
            offsets[i] = offset;
            placed.Add(i);
            totalSize = Math.Max(totalSize, offset + size);
        }
        return offsets;
    }

    public static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;
}
