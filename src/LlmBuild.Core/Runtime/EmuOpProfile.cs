using System.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>Wall time per kind of instruction (a matmul by its weight dtype and shape), summed over launches.</summary>
internal sealed class EmuOpProfile
{
    private readonly Dictionary<string, (long Ticks, long Count)> _entries = new(StringComparer.Ordinal);

    /// <summary>Each instruction's kind, named once (not formatted again at every call). The profiler's own bookkeeping still shows as time between instructions: 0.27–0.62 ms a step measured around its calls, which unprofiled steps do not pay.</summary>
    private readonly Dictionary<EmuInstr, string> _kinds = new(ReferenceEqualityComparer.Instance);

    public void Add(EmuInstr instr, long ticks)
    {
        lock (_entries)
        {
            if (!_kinds.TryGetValue(instr, out string? key))
                _kinds[instr] = key = instr.Op switch
                {
                    EmuOp.A16MatMul => $"A16MatMul w{instr.Ints[3]} {instr.Ints[0]}x{instr.Ints[1]}x{instr.Ints[2]}",
                    EmuOp.MatMul => $"MatMul {instr.Inputs[1].DType} {instr.Ints[0]}x{instr.Ints[1]}x{instr.Ints[2]}",
                    _ => instr.Op.ToString(),
                };
            ref var e = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_entries, key, out _);
            e = (e.Ticks + ticks, e.Count + 1);
        }
    }

    /// <summary>The entries, most time first: (kind, milliseconds, calls).</summary>
    public IEnumerable<(string Kind, double Ms, long Count)> Entries()
    {
        lock (_entries)
            return _entries.OrderByDescending(e => e.Value.Ticks)
                .Select(e => (e.Key, e.Value.Ticks * 1000.0 / Stopwatch.Frequency, e.Value.Count)).ToList();
    }
}
