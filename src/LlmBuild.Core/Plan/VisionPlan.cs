using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;

namespace LlmBuild.Core.Plan;

/// <summary>
/// What a vision-language model adds to the build (DESIGN §13): MaxPixels (the family default when unset) fixes the
/// number of patches the <c>vit</c> net takes; the <c>vit</c> weight owner holds the tower's tensors — in the
/// activation dtype unless QuantizeVit, and the patch embedding always so (its K = C·T·P·P = 1176 divides into no usual
/// quantization group).
/// </summary>
public static class VisionPlan
{
    public const string VitPiece = NetContract.Vit.Net;
    public const string VitOwner = NetContract.Vit.Net;

    /// <summary>MaxPixels as (width, height): the option, or the family's default.</summary>
    public static (int Width, int Height) MaxPixels(BuildOptions options, ModelFamily family) =>
        options.MaxPixels.Length > 0 ? BuildOptions.ParseMaxPixels(options.MaxPixels)
            : family.Vision?.DefaultMaxPixels ?? throw new InvalidOperationException($"Family {family.Name} has no vision tower.");

    /// <summary>
    /// The patches one vit run takes: MaxPixels / patch², checked to be a multiple of the pixel unit (28×28) so the
    /// patches form whole merge windows.
    /// </summary>
    public static int NumPatches(BuildOptions options, ModelFamily family, VisionConfig vision)
    {
        var (w, h) = MaxPixels(options, family);
        long pixels = (long)w * h, unit = (long)vision.PixelUnit * vision.PixelUnit;
        if (pixels % unit != 0)
            throw new LlmBuildException(ErrorCodes.BadMaxPixels,
                $"MaxPixels={w},{h}: {w}×{h} = {pixels} is not a multiple of {vision.PixelUnit}×{vision.PixelUnit} = {unit}, the pixel unit of {family.Name}. " +
                $"Use for example {w / vision.PixelUnit * vision.PixelUnit},{h / vision.PixelUnit * vision.PixelUnit}.");
        long patches = pixels / ((long)vision.PatchSize * vision.PatchSize);
        if (patches > 1 << 16)
            throw new LlmBuildException(ErrorCodes.BadMaxPixels,
                $"MaxPixels={w},{h} gives {patches} patches; the vit net's attention over them would need {patches * patches * 4 / (1 << 30)} GiB. Use at most 65536 patches (e.g. 3584,3584).");
        return (int)patches;
    }

    /// <summary>The image path supports one sequence on one device with a static prefill; other options are refused.</summary>
    public static void CheckOptions(BuildOptions o, ModelFamily family, ModelConfig config)
    {
        if (config.Vision is { } v && v.OutHiddenSize != config.HiddenSize)
            throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                $"vision_config's {family.Vision!.OutHiddenField} ({v.OutHiddenSize}) differs from the LLM's hidden_size ({config.HiddenSize}); the merger's output replaces token embeddings, so they must agree.");
        var bad = new List<string>();
        if (o.Batch > 1) bad.Add($"Batch={o.Batch}");
        if (o.NumDevice > 1) bad.Add($"NumDevice={o.NumDevice}");
        if (o.Dynamic) bad.Add("Dynamic=true");
        if (o.SharePrompt) bad.Add("SharePrompt=true");
        if (o.UseHistoryKv) bad.Add("UseHistoryKv=true");
        if (o.EmbeddingDisk) bad.Add("EmbeddingDisk=true");
        if (o.LoraMaxRank > 0) bad.Add($"LoraMaxRank={o.LoraMaxRank}");
        if (bad.Count > 0)
            throw new LlmBuildException(ErrorCodes.VisionUnsupportedOption,
                $"Family {family.Name} (a vision-language model) is built for one sequence on one device with a static prefill; {string.Join(", ", bad)} " +
                "is not supported with M-RoPE positions and image embeddings yet. Remove the option(s).");
    }

    /// <summary>The vit owner: the patch embedding, every block's tensors in role order, then the merger.</summary>
    public static WeightOwner BuildOwner(ModelFamily family, VisionConfig v, ICheckpoint? checkpoint, QuantScheme scheme, bool quantizeVit, string modelDir)
    {
        VisionTowerDeclaration tower = family.Vision!;
        long e = v.EmbedDim, inter = v.IntermediateSize, merged = (long)v.EmbedDim * v.MergeArea, outH = v.OutHiddenSize;
        long[] Shape(VisionRole role) => role switch
        {
            VisionRole.PatchEmbed => [e, v.PatchDim],
            VisionRole.Norm1 or VisionRole.Norm1Bias or VisionRole.Norm2 or VisionRole.Norm2Bias or VisionRole.ProjBias
                or VisionRole.Fc2Bias or VisionRole.DownBias or VisionRole.MergerNorm or VisionRole.MergerNormBias => [e],
            VisionRole.Qkv => [3 * e, e],
            VisionRole.QkvBias => [3 * e],
            VisionRole.Proj => [e, e],
            VisionRole.Fc1 or VisionRole.Gate or VisionRole.Up => [inter, e],
            VisionRole.Fc1Bias or VisionRole.GateBias or VisionRole.UpBias => [inter],
            VisionRole.Fc2 or VisionRole.Down => [e, inter],
            VisionRole.Merger0 => [merged, merged],
            VisionRole.Merger0Bias => [merged],
            VisionRole.Merger2 => [outH, merged],
            VisionRole.Merger2Bias => [outH],
            _ => throw new InvalidOperationException(role.ToString()),
        };
        bool quantized = quantizeVit && scheme.IsQuantized;
        if (quantized)
            foreach (var (what, k) in new[] { ("embed_dim", e), ("the MLP width", inter), ("embed_dim × merge²", merged) })
                GroupSizeRule.Check(scheme, k, $"QuantizeVit: the vision linears that take {what} ({k}) as inputs",
                    "Use a QGroupSize that divides it, or leave QuantizeVit off (the default: the tower stays in the activation dtype).");
        WeightEntry Entry(VisionRole role, int block)
        {
            string source = tower.TensorName(role, block);
            long[] shape = Shape(role);
            // A dry run before the download has no checkpoint: vision_config decides every shape.
            if (checkpoint is not null && !checkpoint.Contains(source))
                throw new LlmBuildException(ErrorCodes.MissingWeight,
                    $"Tensor '{source}' (vision {role}{(block >= 0 ? $" of vision block {block}" : "")}) is missing from the checkpoint in '{modelDir}'. " +
                    "Check that the weights belong to this config.json (vision_config) and that every shard is present.", modelDir);
            TensorInfo? info = checkpoint?.GetInfo(source);
            if (info is not null && !info.Shape.SequenceEqual(shape))
                throw new LlmBuildException(ErrorCodes.MissingWeight,
                    $"Tensor '{source}' in '{info.File}' has shape [{string.Join(",", info.Shape)}] but vision_config implies [{string.Join(",", shape)}]. " +
                    "Check that the weights belong to this config.json.", info.File);
            bool linear = role is VisionRole.Qkv or VisionRole.Proj or VisionRole.Fc1 or VisionRole.Fc2 or VisionRole.Gate or VisionRole.Up
                or VisionRole.Down or VisionRole.Merger0 or VisionRole.Merger2;
            return new WeightEntry(WeightRole.Vision, block, source, source, quantized && linear ? WeightStorage.Quantized : WeightStorage.Activation, shape)
            {
                Vision = role,
            };
        }
        var entries = new List<WeightEntry> { Entry(VisionRole.PatchEmbed, -1) };
        VisionRole[] blockRoles = Enum.GetValues<VisionRole>().Where(r => tower.IsBlockRole(r) && tower.Has(r)).ToArray();
        for (int block = 0; block < v.Depth; block++)
            foreach (VisionRole role in blockRoles) entries.Add(Entry(role, block));
        foreach (VisionRole role in Enum.GetValues<VisionRole>().Where(r => !tower.IsBlockRole(r) && r != VisionRole.PatchEmbed && tower.Has(r)))
            entries.Add(Entry(role, -1));
        return new WeightOwner(VitOwner, entries);
    }

    /// <summary>Every vision tensor name the tower reads (for the reference forward's own tensor check).</summary>
    public static IEnumerable<string> TensorNames(ModelFamily family, VisionConfig v)
    {
        VisionTowerDeclaration tower = family.Vision!;
        foreach (VisionRole role in Enum.GetValues<VisionRole>().Where(tower.Has))
        {
            if (!tower.IsBlockRole(role)) { yield return tower.TensorName(role); continue; }
            for (int block = 0; block < v.Depth; block++) yield return tower.TensorName(role, block);
        }
    }
}
