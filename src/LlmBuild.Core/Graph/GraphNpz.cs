using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Graph;

/// <summary>How graph tensors are stored in npz files (bf16 as '&lt;u2' bit patterns, as the weights stage does).</summary>
public static class GraphNpz
{
    public static string Descr(GraphDType t) => t switch
    {
        GraphDType.F32 => NpyFormat.Float32,
        GraphDType.BF16 => NpyFormat.UInt16,
        GraphDType.F16 => NpyFormat.Float16,
        GraphDType.UI8 => NpyFormat.UInt8,
        GraphDType.SI32 => NpyFormat.Int32,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Adds a piece's constants (RoPE tables, Dynamic mask, LoRA zeros, sampling constants) in their dtypes.</summary>
    public static void AddConstants(NpzWriter npz, PieceGraph graph) => AddConstants(npz, graph.Constants);

    /// <summary>Adds constants in their dtypes.</summary>
    public static void AddConstants(NpzWriter npz, IEnumerable<GraphConstant> constants)
    {
        foreach (GraphConstant c in constants)
        {
            switch (c.DType)
            {
                case GraphDType.F32: npz.AddFloat32(c.Key, c.Data, c.Shape); break;
                case GraphDType.BF16:
                {
                    var bits = new ushort[c.Data.Length];
                    FloatFormats.FloatToBFloat16(c.Data, bits);
                    npz.AddBFloat16(c.Key, bits, c.Shape);
                    break;
                }
                case GraphDType.F16:
                {
                    var bits = new ushort[c.Data.Length];
                    FloatFormats.FloatToHalf(c.Data, bits);
                    npz.AddHalf(c.Key, bits, c.Shape);
                    break;
                }
                default: throw new InvalidOperationException($"Constant '{c.Key}' has dtype {c.DType}, which constants never use.");
            }
        }
    }
}

/// <summary>
/// Owner weights read back from the npz files the weights stage wrote (and optionally a piece's own npz), so an
/// exported piece can be run exactly as deployed. <see cref="Verify"/> checks that every weight a graph references is
/// present with the graph's shape and dtype: the contract between the quantize and export stages.
/// </summary>
public sealed class NpzWeightSource : IWeightSource, IDisposable
{
    private readonly List<NpzReader> _readers;

    public NpzWeightSource(params string[] npzPaths) => _readers = npzPaths.Select(p => new NpzReader(p)).ToList();

    private NpzReader Find(string key) => _readers.FirstOrDefault(r => r.Contains(key))
        ?? throw new LlmBuildException(ErrorCodes.GraphMissingWeight,
            $"No weight file holds '{key}' (searched {string.Join(", ", _readers.Select(r => r.Path))}). Rebuild the weights stage.");

    public float[] ReadFloat(string key) => Find(key).ReadFloat32(key, uint16IsBFloat16: true);

    public byte[] ReadBytes(string key) => Find(key).ReadBytes(key);

    public void Verify(PieceGraph graph)
    {
        foreach (GraphWeight w in graph.Weights)
        {
            NpzEntry e = Find(w.Key).GetEntry(w.Key);
            if (e.Header.Descr != GraphNpz.Descr(w.DType) || !e.Header.Shape.AsSpan().SequenceEqual(w.StoredShape))
                throw new LlmBuildException(ErrorCodes.GraphBadShape,
                    $"Piece {graph.Name}: weight '{w.Key}' is stored as {e.Header.Descr} {e.Header.ShapeText}, the graph expects " +
                    $"{GraphNpz.Descr(w.DType)} [{string.Join(", ", w.StoredShape)}]. The weights and the export disagree; rebuild both.");
        }
    }

    public void Dispose()
    {
        foreach (var r in _readers) r.Dispose();
    }
}
