namespace LlmBuild.Core.Diagnostics;

/// <summary>Codes of today's llm_convert command line (history KV, chunks, dropped flags, pipeline parallelism).</summary>
public static partial class ErrorCodes
{
    [Code("UseHistoryKv derived options as the reference does: Dynamic=true, ChunkLength (SeqLength/4 when not set) and MaxInputLength = ChunkLength (warning).")]
    public const string HistoryKvDerived = "LLMB0020";
    [Code("ChunkLength is out of range: larger than SeqLength/2, zero under UseHistoryKv (SeqLength below 4), or contradicted by MaxInputLength.")]
    public const string BadChunkLength = "LLMB0021";
    [Code("An option the current llm_convert.py dropped (SharePrompt, MaxPrefillKvLength) still builds its nets, but a newer pipeline will not know them (warning).")]
    public const string DroppedOption = "LLMB0022";
    [Code("ChunkLength with Batch > 1: the chunked decode nets (block_cache_<i>_<s>) are built for one sequence only, so this build decodes through block_cache_<i> (warning).")]
    public const string ChunkedDecodeNeedsOneSequence = "LLMB0025";
    [Code("AudioLength is set but the model's family has no audio tower, so it changes nothing (warning).")]
    public const string AudioLengthUnused = "LLMB0023";
    [Code("DistributeStrategy=pp cannot cut the model into NumDevice stages: it needs at least NumDevice − 2 ≥ 1 layers per block stage, one sequence (Batch=1) and one core set.")]
    public const string PipelineSplit = "LLMB0024";

    [Code("A pipeline-parallel package (<name>_pp.tar) or its manifest is malformed: a bad tar header or checksum, a missing member, or a manifest that disagrees with the stage bmodels.")]
    public const string BadPipelinePackage = "LLMB0420";
}
