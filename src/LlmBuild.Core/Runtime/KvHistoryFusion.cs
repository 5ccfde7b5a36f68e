using LlmBuild.Core.BModel;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Runtime;

/// <summary>
/// Where a decode step's attention reads its keys and values from when the program builds them as
/// Concat(Convert(history bf16 → f32), new rows): the history as it lies (bf16 or f32) and the new rows, so the
/// Convert and Concat are skipped and attention widens only the rows the mask lets it read. The program as written
/// widens and copies the whole SeqLength history every step (a few MB per layer and sequence) though a short
/// conversation has filled a few rows of it. The values attention sees are the same f32 numbers (bf16 → f32 is exact,
/// a concat copies), so nothing the emulator computes changes.
/// </summary>
internal sealed class KvHistoryFusion
{
    /// <summary>Off: every program runs as written (the runtime benchmark's A/B switch and the tests' reference).</summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>One operand of attention split in two along its rows: the history and the rows appended to it.</summary>
    internal readonly record struct Source(TensorRef History, TensorRef Fresh, long HistoryRows, long FreshRows);

    private KvHistoryFusion(bool[] skip, Dictionary<int, (Source K, Source V)> attention) => (Skip, Attention) = (skip, attention);

    /// <summary>Instructions not to run (the Convert and Concat an attention now reads through).</summary>
    public bool[] Skip { get; }

    /// <summary>For an Attention instruction's index, where its keys and values lie.</summary>
    public Dictionary<int, (Source K, Source V)> Attention { get; }

    /// <summary>The fusion of <paramref name="program"/>, or null when no attention of it reads a Convert-Concat history.</summary>
    public static KvHistoryFusion? Find(EmuProgram program)
    {
        var ins = program.Instructions;
        var skip = new bool[ins.Count];
        var attention = new Dictionary<int, (Source K, Source V)>();
        for (int a = 0; a < ins.Count; a++)
        {
            EmuInstr at = ins[a];
            if (at.Op != EmuOp.Attention || at.Ints.Length < 6) continue;
            long batch = at.Ints[0], kvHeads = at.Ints[2], dim = at.Ints[3];
            if (Split(program, a, 1, batch, kvHeads * dim, skip) is not { } k || Split(program, a, 2, batch, kvHeads * dim, skip) is not { } v) continue;
            if (k.Source.HistoryRows != v.Source.HistoryRows || k.Source.FreshRows != v.Source.FreshRows) continue;
            foreach (int i in k.Skipped.Concat(v.Skipped)) skip[i] = true;
            attention[a] = (k.Source, v.Source);
        }
        return attention.Count == 0 ? null : new KvHistoryFusion(skip, attention);
    }

    /// <summary>Attention <paramref name="a"/>'s operand <paramref name="slot"/> as history + new rows, if a Concat made it and may be skipped.</summary>
    private static (Source Source, List<int> Skipped)? Split(EmuProgram program, int a, int slot, long batch, long inner, bool[] taken)
    {
        var ins = program.Instructions;
        TensorRef kv = ins[a].Inputs[slot];
        int c = Producer(ins, a, kv);
        if (c < 0 || taken[c]) return null;
        EmuInstr concat = ins[c];
        if (concat.Op != EmuOp.Concat || concat.Inputs.Length != 2 || concat.Ints.Length != 4 || !Same(concat.Outputs[0], kv)) return null;
        if (concat.Ints[0] != batch || concat.Ints[1] != inner) return null;
        if (!ReadOnlyBy(program, c, kv, a)) return null;
        TensorRef history = concat.Inputs[0], fresh = concat.Inputs[1];
        var skipped = new List<int> { c };
        int from = c;
        // The history widened by a Convert just for this concat: read its source instead.
        int p = Producer(ins, c, history);
        if (p >= 0 && ins[p].Op == EmuOp.Convert && Same(ins[p].Outputs[0], history) && history.DType == BModelDataType.Float32
            && ins[p].Inputs[0].DType is BModelDataType.BFloat16 or BModelDataType.Float32 && ins[p].Inputs[0].Count == history.Count
            && ReadOnlyBy(program, p, history, c) && !taken[p])
        {
            skipped.Add(p);
            history = ins[p].Inputs[0];
            from = p;
        }
        else if (history.DType != BModelDataType.Float32) return null;
        if (fresh.DType != BModelDataType.Float32) return null;
        long historyRows = concat.Ints[2], freshRows = concat.Ints[3];
        if (history.Count != batch * historyRows * inner || fresh.Count != batch * freshRows * inner || ins[a].Ints[5] != historyRows + freshRows) return null;
        // Both parts are read at the attention now: nothing between may write them, nor may the attention's output overlap them.
        if (Written(ins, from, a, history) || Written(ins, c, a, fresh) || Overlaps(ins[a].Outputs[0], history) || Overlaps(ins[a].Outputs[0], fresh)) return null;
        return (new Source(history, fresh, historyRows, freshRows), skipped);
    }

    /// <summary>The last instruction before <paramref name="before"/> writing bytes of <paramref name="t"/>, or −1.</summary>
    private static int Producer(IReadOnlyList<EmuInstr> ins, int before, TensorRef t)
    {
        for (int i = before - 1; i >= 0; i--)
            if (ins[i].Outputs.Any(o => Overlaps(o, t))) return i;
        return -1;
    }

    /// <summary>True when <paramref name="t"/>, written by instruction <paramref name="producer"/>, is read by <paramref name="consumer"/> only (until overwritten), leaves no output and is no probe.</summary>
    private static bool ReadOnlyBy(EmuProgram program, int producer, TensorRef t, int consumer)
    {
        if (t.Region != Region.Ctx || program.Probes.Any(pr => Overlaps(pr.Tensor, t))) return false;
        var ins = program.Instructions;
        for (int i = producer + 1; i < ins.Count; i++)
        {
            if (i != consumer && ins[i].Inputs.Any(x => Overlaps(x, t))) return false;
            if (ins[i].Outputs.Any(o => Overlaps(o, t))) return true;
        }
        return true;
    }

    /// <summary>True when an instruction in (from, to) writes bytes of <paramref name="t"/>.</summary>
    private static bool Written(IReadOnlyList<EmuInstr> ins, int from, int to, TensorRef t)
    {
        for (int i = from + 1; i < to; i++)
            if (ins[i].Outputs.Any(o => Overlaps(o, t))) return true;
        return false;
    }

    private static bool Same(TensorRef a, TensorRef b) => a.Region == b.Region && a.Offset == b.Offset && a.DType == b.DType && a.Count == b.Count;

    /// <summary>Whether two operands share memory (io operands are whole buffers named by index).</summary>
    internal static bool Overlaps(TensorRef a, TensorRef b)
    {
        if (a.Region != b.Region || a.Region == Region.None) return false;
        if (a.Region is Region.Input or Region.Output) return a.Offset == b.Offset;
        return a.Offset < b.Offset + b.Bytes && b.Offset < a.Offset + a.Bytes;
    }
}
