using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Tests.Flags;

/// <summary>The rules llm_convert.py applies to --use_history_kv and --chunk_length, and the dropped and new flags.</summary>
[TestClass]
public sealed class HistoryKvRulesTests
{
    private static BuildOptions Parse(ICollection<LlmBuildWarning>? notes = null, params (string, string)[] values)
    {
        var d = new Dictionary<string, string?> { ["ModelPath"] = "m", ["SeqLength"] = "512" };
        foreach (var (k, v) in values) d[k] = v;
        return BuildOptions.Parse(d, notes);
    }

    [TestMethod]
    public void UseHistoryKvForcesDynamicAndDerivesTheChunk()
    {
        var notes = new List<LlmBuildWarning>();
        var o = Parse(notes, ("UseHistoryKv", "true"));
        Assert.IsTrue(o.Dynamic, "forced on");
        Assert.AreEqual(128, o.ChunkLength, "seq_length // 4");
        Assert.AreEqual(128, o.MaxInputLength, "max_input_length = chunk_length");
        Assert.AreEqual(ErrorCodes.HistoryKvDerived, notes.Single().Code);
        StringAssert.Contains(notes[0].Message, "SeqLength/4 = 128");
        Assert.AreEqual(o, o.WithReferenceRules(notes), "idempotent");
        Assert.AreEqual(1, notes.Count, "nothing more to say the second time");

        var explicitChunk = Parse(null, ("UseHistoryKv", "true"), ("ChunkLength", "64"));
        Assert.AreEqual((64, 64), (explicitChunk.ChunkLength, explicitChunk.MaxInputLength));
    }

    [TestMethod]
    public void TheOldNamesStillWork()
    {
        Assert.IsTrue(Parse(null, ("UseBlockWithKv", "true")).UseHistoryKv, "an April 2026 project's property");
        // --use_block_with_kv with --max_input_length (the April 2026 way): the input length becomes the chunk, with a note.
        var notes = new List<LlmBuildWarning>();
        var o = Parse(notes, ("UseBlockWithKv", "true"), ("MaxInputLength", "32"));
        Assert.AreEqual((32, 32, true), (o.ChunkLength, o.MaxInputLength, o.Dynamic));
        StringAssert.Contains(notes.Single().Message, "--chunk_length");
    }

    [TestMethod]
    public void BadChunkLengthsAreCodedErrors()
    {
        void Refused(params (string, string)[] values) =>
            Assert.AreEqual(ErrorCodes.BadChunkLength, Assert.ThrowsExactly<LlmBuildException>(() => Parse(null, values)).Code, string.Join(",", values));
        Refused(("ChunkLength", "257"));                                           // > seq_length // 2
        Refused(("UseHistoryKv", "true"), ("ChunkLength", "300"));
        Refused(("UseHistoryKv", "true"), ("ChunkLength", "64"), ("MaxInputLength", "100")); // contradicts the chunk
        Assert.AreEqual(ErrorCodes.BadChunkLength, Assert.ThrowsExactly<LlmBuildException>(() =>
            BuildOptions.Parse(new Dictionary<string, string?> { ["ModelPath"] = "m", ["SeqLength"] = "3", ["UseHistoryKv"] = "true" })).Code, "3 // 4 = 0");
        Assert.AreEqual(ErrorCodes.InvalidProperty, Assert.ThrowsExactly<LlmBuildException>(() => Parse(null, ("ChunkLength", "-1"))).Code);
        Assert.AreEqual(ErrorCodes.InvalidProperty, Assert.ThrowsExactly<LlmBuildException>(() => Parse(null, ("AudioLength", "-5"))).Code);
        Assert.AreEqual(256, Parse(null, ("ChunkLength", "256")).ChunkLength, "seq_length // 2 is allowed");
    }

    [TestMethod]
    public void ChunkLengthAddsDoublingDecodeSegmentsBelowSeqLength()
    {
        var o = new BuildOptions { ModelPath = "m", SeqLength = 8192, ChunkLength = 1024 };
        CollectionAssert.AreEqual(new[] { 1024, 2048, 4096 }, Resolver.DecodeSegments(o).ToArray());
        CollectionAssert.AreEqual(new[] { 8, 16, 32 }, Resolver.DecodeSegments(o with { SeqLength = 48, ChunkLength = 8 }).ToArray());
        Assert.AreEqual(0, Resolver.DecodeSegments(o with { ChunkLength = 0 }).Count);
        Assert.AreEqual(0, Resolver.DecodeSegments(o with { Batch = 2 }).Count, "one sequence only");
        Assert.AreEqual("block_cache_3_1024", Piece.SegmentName(3, 1024));
    }
}
