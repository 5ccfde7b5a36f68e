using System.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>Wall time per kind of instruction (a matmul by its weight dtype and shape), summed over launches.</summary>
internal sealed class EmuOpProfile
{
    private readonly Dictionary<string, (long Ticks, long Count)> _entries = new(StringComparer.Ordinal);

    public void Add(EmuInstr instr, long ticks)
    {
        string key = instr.Op switch
        {
            EmuOp.A16MatMul => $"A16MatMul w{instr.Ints[3]} {instr.Ints[0]}x{instr.Ints[1]}x{instr.Ints[2]}",
            EmuOp.MatMul => $"MatMul {instr.Inputs[1].DType} {instr.Ints[0]}x{instr.Ints[1]}x{instr.Ints[2]}",
            _ => instr.Op.ToString(),
        };
        lock (_entries)
        {
            _entries.TryGetValue(key, out var e);
            _entries[key] = (e.Ticks + ticks, e.Count + 1);
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
