using static LlmBuild.Core.Models.LlamaLayout;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// MiniCPM (MiniCPM 1/2/4): llama's block and names with muP scalings — embeddings × <c>scale_emb</c>, each residual
/// branch × <c>scale_depth</c>/√layers, the final hidden state ÷ (hidden_size / <c>dim_model_base</c>) — and longrope.
/// </summary>
public static class MiniCpm
{
    public static ModelFamily Family { get; } = new()
    {
        Name = "minicpm",
        ModelTypes = ["minicpm"],
        WeightNames = Names,
        EmbeddingScaleField = "scale_emb",
        ResidualDepthScaleField = "scale_depth",
        LogitWidthBaseField = "dim_model_base",
        IgnorableTensors = InverseFrequencyBuffers,
    };
}
