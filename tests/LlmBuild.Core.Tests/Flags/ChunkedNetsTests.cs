using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Runtime;

namespace LlmBuild.Core.Tests.Flags;

/// <summary>
/// UseHistoryKv + ChunkLength builds the nets the reference builds (block_i of one chunk, block_kv_i, the chunked decode
/// nets block_cache_i_s, block_cache_i), the emulator runs them, they give the unchunked build's logits, and verify covers them.
/// </summary>
[TestClass]
public sealed class ChunkedNetsTests
{
    private static readonly int[] Prompt = [9707, 11, 1879, 374, 264, 1273, 315, 279, 2041, 13, 576, 3974, 13876, 38835, 35308, 34208, 785, 3974, 17, 4];

    private static ExampleBuild.Built Chunked() => ExampleBuild.Get("bf16", seqLength: 48, extra: [("UseHistoryKv", "true"), ("ChunkLength", "8")]);

    [TestMethod]
    public void ThePiecesAreTheReferencesNets()
    {
        var model = Chunked().Model;
        Assert.IsTrue(model.Options.Dynamic);
        Assert.AreEqual(8, model.PrefillLength);
        var layer0 = model.Pieces.Where(p => p.Layer == 0).Select(p => p.Name).ToArray();
        CollectionAssert.AreEqual(new[] { "block_0", "block_kv_0", "block_cache_0_8", "block_cache_0_16", "block_cache_0_32", "block_cache_0" }, layer0);
        Assert.AreEqual(16, model.Piece("block_cache_0_16").History);
    }

    /// <summary>A 20-token prompt prefilled in chunks of 8 (block_0, then block_kv twice) and 20 decode steps through the
    /// segment nets 8/16/32 and block_cache give the logits of the unchunked build (one 20-token prefill, block_cache only).</summary>
    [TestMethod]
    public void ChunkedPathGivesTheUnchunkedLogits()
    {
        var plain = ExampleBuild.Get("bf16", seqLength: 48);
        using var whole = LlmEmulator.Load(plain.BModel);
        using var chunked = LlmEmulator.Load(Chunked().BModel);
        CollectionAssert.AreEqual(new[] { 8, 16, 32 }, chunked.DecodeSegments.ToArray());
        int vocab = whole.VocabSize;

        float[] a = whole.Prefill(Prompt, allPositions: true);
        float[] b = chunked.PrefillChunked(Prompt, allPositions: true);
        Assert.AreEqual(a.Length, b.Length);
        for (int p = 0; p < Prompt.Length; p++)
        {
            double cos = EmulatorGoldenTests.Cosine(a.AsSpan(p * vocab, vocab), b.AsSpan(p * vocab, vocab));
            Assert.IsTrue(cos > 0.9999, $"prefill position {p}: cosine {cos}");
        }

        // Decode from position 20 to 47: block_cache_i_32 up to position 32, then block_cache_i (48 rows).
        var used = new HashSet<string>();
        float[] la = a.AsSpan((Prompt.Length - 1) * vocab, vocab).ToArray(), lb = b.AsSpan((Prompt.Length - 1) * vocab, vocab).ToArray();
        double worst = 1;
        for (int step = 0; chunked.Position < 48; step++)
        {
            int token = LlmEmulator.ArgMax(la);
            used.Add(chunked.DecodeNet(0, chunked.Position));
            la = whole.Decode(token);
            lb = chunked.Decode(token);
            worst = Math.Min(worst, EmulatorGoldenTests.Cosine(la, lb));
        }
        Console.WriteLine($"worst decode cosine {worst:0.0000000}, nets {string.Join(", ", used.Order())}");
        Assert.IsTrue(worst > 0.9999, $"decode cosine {worst}");
        CollectionAssert.AreEquivalent(new[] { "block_cache_0_32", "block_cache_0" }, used.ToArray());

        // Short contexts run the short nets.
        chunked.Reset();
        chunked.PrefillChunked(Prompt.AsSpan(0, 3));
        Assert.AreEqual("block_cache_0_8", chunked.DecodeNet(0, chunked.Position));
        Assert.AreEqual("block_cache_0_16", chunked.DecodeNet(0, 9));
        Assert.AreEqual("block_cache_0", chunked.DecodeNet(0, 33));
    }

    /// <summary>`llmbuild run` and the server take prompts longer than one chunk on a UseHistoryKv model.</summary>
    [TestMethod]
    public void RunTakesPromptsLongerThanAChunk()
    {
        using var chunked = LlmEmulator.Load(Chunked().BModel);
        using var whole = LlmEmulator.Load(ExampleBuild.Get("bf16", seqLength: 48).BModel);
        Assert.AreEqual(8, chunked.PrefillLength);
        Assert.AreEqual(48, chunked.MaxPromptLength);
        var a = new LlmBuild.Core.Serving.EmulatorTokenGenerator(chunked, new TokenSampler(null, 0));
        var b = new LlmBuild.Core.Serving.EmulatorTokenGenerator(whole, new TokenSampler(null, 0));
        int ta = a.Prefill(Prompt), tb = b.Prefill(Prompt);
        for (int step = 0; step < 6; step++)
        {
            Assert.AreEqual(tb, ta, $"token {step}");
            (ta, tb) = (a.Decode(ta), b.Decode(tb));
        }
    }

    [TestMethod]
    public void VerifyCoversEveryChunkedNet()
    {
        var built = Chunked();
        var lines = new List<string>();
        VerifyReport r = VerifyStage.Run(built.Model, built.BModel, Path.Combine(built.Dir, "verify-chunked.json"), lines.Add);
        foreach (string l in lines) Console.WriteLine(l);
        Assert.IsTrue(r.Passed, string.Join("; ", r.Failures));
        // 8 prompt tokens (4 through block_0, 4 through block_kv_0), decode positions 8..31.
        foreach (string net in new[] { "block_0", "block_kv_0", "block_cache_0_8", "block_cache_0_16", "block_cache_0_32" })
            Assert.IsTrue(r.Pieces.Any(p => p.Piece == net), $"verify ran {net}");
    }

    [TestMethod]
    public void APromptLongerThanAChunkNeedsHistoryNets()
    {
        var built = ExampleBuild.Get("bf16", seqLength: 48, extra: [("MaxInputLength", "8"), ("ChunkLength", "8")]);
        Assert.IsFalse(built.Model.Pieces.Any(p => p.Kind == PieceKind.BlockKv), "ChunkLength alone chunks the decode only");
        using var emu = LlmEmulator.Load(built.BModel);
        Assert.AreEqual(ErrorCodes.RuntimeBadInput, Assert.ThrowsExactly<LlmBuildException>(() => emu.PrefillChunked(Prompt)).Code);
    }
}
