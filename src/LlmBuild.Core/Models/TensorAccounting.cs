using LlmBuild.Core.Checkpoints;

namespace LlmBuild.Core.Models;

/// <summary>
/// No tensor left behind, as one rule for the build and for the reference forward: which checkpoint tensors the names a
/// reader uses leave unaccounted for.
/// </summary>
public static class TensorAccounting
{
    /// <summary>
    /// The checkpoint's tensors that are neither in <paramref name="used"/>, nor a pre-quantized companion of a used
    /// weight (x.weight stored as x.qweight, x.scales, …: every tensor of its stem), nor ignorable by the family, nor part
    /// of a tower it does not build (listed apart, <see cref="UnbuiltTower"/>); split
    /// into those the user drops on purpose (<paramref name="dropPatterns"/>) and the unknown rest.
    /// </summary>
    public static (List<string> Dropped, List<string> Unknown) Unused(ICheckpoint checkpoint, ModelFamily family,
        IReadOnlySet<string> used, IReadOnlyList<string> dropPatterns)
    {
        string[] packedStems = used.Where(n => !checkpoint.Contains(n) && n.EndsWith(".weight", StringComparison.Ordinal))
            .Select(n => n[..^"weight".Length]).ToArray();
        var dropped = new List<string>();
        var unknown = new List<string>();
        foreach (string tensor in checkpoint.TensorNames)
        {
            if (used.Contains(tensor) || family.IsIgnorable(tensor) || family.IsUnbuiltTower(tensor) || packedStems.Any(stem => tensor.StartsWith(stem, StringComparison.Ordinal))) continue;
            (dropPatterns.Any(p => ModelFamily.WildcardMatch(p, tensor)) ? dropped : unknown).Add(tensor);
        }
        return (dropped, unknown);
    }

    /// <summary>The checkpoint's tensors of towers the family does not build (a multimodal checkpoint's vision tower).</summary>
    public static List<string> UnbuiltTower(ICheckpoint checkpoint, ModelFamily family) =>
        checkpoint.TensorNames.Where(family.IsUnbuiltTower).ToList();

    /// <summary>The first five names, quoted, and how many more.</summary>
    public static string Listing(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(5).Select(n => $"'{n}'")) + (names.Count > 5 ? $" and {names.Count - 5} more" : "");
}
