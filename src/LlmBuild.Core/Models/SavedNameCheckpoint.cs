using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>
/// A checkpoint whose tensors saved under a newer name layout (<see cref="ModelFamily.SavedNamePrefixes"/>: what
/// transformers' <c>_checkpoint_conversion_mapping</c> renames, e.g. gemma3's <c>model.language_model.*</c>) appear under
/// the family's declared names (<c>language_model.model.*</c>); every other tensor keeps its name. The bytes are read in
/// place. A tensor present under both names is refused (LLMB0161).
/// </summary>
public sealed class SavedNameCheckpoint : ICheckpoint
{
    private readonly ICheckpoint _inner;
    private readonly Dictionary<string, string> _sourceOf;
    private readonly IReadOnlyList<string> _names;

    private SavedNameCheckpoint(ICheckpoint inner, Dictionary<string, string> sourceOf)
    {
        _inner = inner;
        _sourceOf = sourceOf;
        var renamed = sourceOf.Values.ToHashSet(StringComparer.Ordinal);
        _names = inner.TensorNames.Where(n => !renamed.Contains(n)).Concat(sourceOf.Keys).Order(StringComparer.Ordinal).ToArray();
    }

    /// <summary><paramref name="inner"/> under the family's declared names; <paramref name="inner"/> itself when nothing is saved under another layout.</summary>
    public static ICheckpoint Wrap(ICheckpoint inner, ModelFamily family)
    {
        if (family.SavedNamePrefixes.Count == 0 || inner is SavedNameCheckpoint) return inner;
        var sourceOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string name in inner.TensorNames)
            foreach (var (saved, declared) in family.SavedNamePrefixes)
            {
                if (!name.StartsWith(saved, StringComparison.Ordinal)) continue;
                string presented = declared + name[saved.Length..];
                if (inner.Contains(presented))
                {
                    inner.Dispose();
                    throw new LlmBuildException(ErrorCodes.MixedCheckpointLayout,
                        $"The checkpoint in '{inner.Directory}' holds both '{name}' and '{presented}', the same {family.Name} tensor in two name layouts " +
                        $"({saved}* and {declared}*). Keep the weight files of one save only.", inner.Directory);
                }
                sourceOf[presented] = name;
                break;
            }
        return sourceOf.Count == 0 ? inner : new SavedNameCheckpoint(inner, sourceOf);
    }

    private string Source(string name) => _sourceOf.GetValueOrDefault(name, name);

    public string Directory => _inner.Directory;
    public IReadOnlyList<string> TensorNames => _names;
    public IReadOnlyList<string> Files => _inner.Files;
    public bool Contains(string name) => _sourceOf.ContainsKey(name) || (_inner.Contains(name) && !_sourceOf.ContainsValue(name));
    public TensorInfo GetInfo(string name) => _sourceOf.TryGetValue(name, out string? source) ? _inner.GetInfo(source) with { Name = name } : _inner.GetInfo(name);
    public void ReadFloat32(string name, long elementOffset, Span<float> destination) => _inner.ReadFloat32(Source(name), elementOffset, destination);
    public void ReadRaw(string name, long byteOffset, Span<byte> destination) => _inner.ReadRaw(Source(name), byteOffset, destination);
    public void Dispose() => _inner.Dispose();
}
