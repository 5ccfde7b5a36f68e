using System.Globalization;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Plan;

/// <summary>One device's share of a pipeline-parallel model: its stage bmodel, nets and layers.</summary>
/// <param name="Device">0 … NumDevice − 1, in pipeline order.</param>
/// <param name="Suffix">The stage file's suffix after the model name: embed_vit, block_00 …, lmhead.</param>
/// <param name="Pieces">The nets the stage bmodel holds, in the resolved model's order.</param>
/// <param name="Layers">The decoder layers whose blocks (and KV cache) live on this device; empty for embed and head stages.</param>
public sealed record PipelineStage(int Device, string Suffix, IReadOnlyList<string> Pieces, IReadOnlyList<int> Layers)
{
    public string FileName(string modelName) => $"{modelName}_{Suffix}.bmodel";
}

/// <summary>
/// Pipeline parallelism (DistributeStrategy=pp, NumDevice = N &gt; 1), as llm_convert's LlmConverter._pp_combine cuts a
/// model: device 0 holds the embedding nets (and a VLM's vit), devices 1 … N−2 hold the decoder layers in N−2 groups of
/// ⌈layers/(N−2)⌉ consecutive layers (every net of a layer: block_i, block_kv_i, block_cache_i and its chunked decode nets),
/// residual "add" nets go to the first block group (no family built here has them), and device N−1 holds lm_head and the
/// sampling heads. Each stage is one bmodel, <c>&lt;name&gt;_embed_vit</c>, <c>&lt;name&gt;_block_&lt;nn&gt;</c> (zero-padded to
/// at least two digits) and <c>&lt;name&gt;_lmhead</c>; the nets themselves are the single-device nets (no tensor split).
/// The reference files block_kv_i with the heads (its name pattern misses it) and skips empty groups; here block_kv_i
/// stays with its layer and a split that leaves a device empty is refused.
/// </summary>
public static class PipelineParallel
{
    public static bool IsPipeline(BuildOptions o) => o.DistributeStrategy == "pp" && o.NumDevice > 1;

    /// <summary>The package the combine stage writes beside the bmodel: &lt;name&gt;_pp.tar, and its manifest &lt;name&gt;_pp.json.</summary>
    public static string PackageFileName(string modelName) => $"{modelName}_pp.tar";
    public static string ManifestFileName(string modelName) => $"{modelName}_pp.json";

    /// <summary>The stages, device by device; a coded error when NumDevice cannot cut the model as the reference does.</summary>
    public static IReadOnlyList<PipelineStage> Stages(ResolvedModel model)
    {
        var o = model.Options;
        int devices = o.NumDevice, layers = model.Config.NumLayers, groups = devices - 2;
        string where = $"DistributeStrategy=pp with NumDevice={devices}";
        if (devices < 3)
            throw new LlmBuildException(ErrorCodes.PipelineSplit,
                $"{where}: a pipeline puts the embedding on the first device, lm_head on the last and the decoder layers on the NumDevice − 2 between, " +
                "so it needs NumDevice ≥ 3 (llm_convert's pp with 2 devices has no device for the layers). Use NumDevice ≥ 3, or DistributeStrategy=tp.");
        if (o.EmbeddingDisk)
            throw new LlmBuildException(ErrorCodes.PipelineSplit,
                $"{where} and EmbeddingDisk=true: the first pipeline device would hold no net (the embedding runs on the host). Set EmbeddingDisk=false for pp.");
        int perGroup = (layers + groups - 1) / groups;
        int used = (layers + perGroup - 1) / perGroup;
        if (used != groups)
            throw new LlmBuildException(ErrorCodes.PipelineSplit,
                $"{where}: {layers} layers in {groups} groups of ⌈{layers}/{groups}⌉ = {perGroup} fill only {used} block devices, leaving {groups - used} device(s) without a net. " +
                $"Use NumDevice = {used + 2}, or one that gives every block device a layer.");

        int pad = Math.Max(2, (groups - 1).ToString(CultureInfo.InvariantCulture).Length);
        var embed = new List<string>();
        var blocks = Enumerable.Range(0, groups).Select(_ => new List<string>()).ToArray();
        var heads = new List<string>();
        foreach (Piece p in model.Pieces)
        {
            if (p.Layer >= 0 && TensorParallel.IsBlock(p.Kind)) blocks[p.Layer / perGroup].Add(p.Name);
            else if (p.Name.StartsWith("embedding", StringComparison.Ordinal) || p.Name.StartsWith("vit", StringComparison.Ordinal)) embed.Add(p.Name);
            else if (p.Name.Contains("add", StringComparison.Ordinal)) blocks[0].Add(p.Name);
            else heads.Add(p.Name);
        }
        var stages = new List<PipelineStage> { new(0, "embed_vit", embed, []) };
        for (int g = 0; g < groups; g++)
        {
            var layerIds = Enumerable.Range(g * perGroup, Math.Min(perGroup, layers - g * perGroup)).ToArray();
            stages.Add(new PipelineStage(g + 1, "block_" + g.ToString(CultureInfo.InvariantCulture).PadLeft(pad, '0'), blocks[g], layerIds));
        }
        stages.Add(new PipelineStage(devices - 1, "lmhead", heads, []));
        return stages;
    }

    /// <summary>The stage that holds a piece.</summary>
    public static PipelineStage StageOf(ResolvedModel model, string piece) =>
        Stages(model).FirstOrDefault(s => s.Pieces.Contains(piece))
        ?? throw new LlmBuildException(ErrorCodes.StaleIntermediate, $"Piece '{piece}' belongs to no pipeline stage of model '{model.Name}'. Rebuild.");
}
