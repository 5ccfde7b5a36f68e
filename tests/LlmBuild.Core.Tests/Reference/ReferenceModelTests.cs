using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Tests.Graph;

namespace LlmBuild.Core.Tests.Reference;

[TestClass]
public sealed class ReferenceModelTests
{
    private static readonly Lazy<ICheckpoint> Tiny = new(() => CheckpointLoader.Open(TestResolver.TinyModelDir));

    /// <summary>The example checkpoint, opened once for all tests (reads are thread-safe).</summary>
    internal static ICheckpoint TinyCheckpoint => Tiny.Value;

    internal static ReferenceModel TinyModel() => new(TinyCheckpoint, ModelConfig.Load(TestResolver.TinyModelDir));

    /// <summary>max |a−b| / max |b| over one row.</summary>
    internal static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(actual[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }
        return maxDiff / maxRef;
    }

    internal static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }

    [TestMethod]
    public void PrefillReproducesHuggingFaceLogits()
    {
        var model = TinyModel();
        int vocab = model.Config.VocabSize;
        float[] logits = model.Forward(Goldens.PromptIds);
        Assert.AreEqual(Goldens.PromptLogits.Length, logits.Length);
        for (int t = 0; t < Goldens.PromptIds.Length; t++)
        {
            var row = logits.AsSpan(t * vocab, vocab);
            var expected = Goldens.PromptLogits.AsSpan(t * vocab, vocab);
            double rel = RelativeError(row, expected);
            Assert.IsTrue(rel < 1e-5, $"position {t}: relative error {rel:E2}");
            Assert.AreEqual(ArgMax(expected), ArgMax(row), $"position {t}");
        }
    }

    [TestMethod]
    public void GreedyDecodeWithKvCacheReproducesHuggingFace()
    {
        var model = TinyModel();
        int vocab = model.Config.VocabSize;
        float[] logits = model.Forward(Goldens.PromptIds);
        var last = logits.AsSpan((Goldens.PromptIds.Length - 1) * vocab, vocab).ToArray();
        double worst = 0;
        for (int step = 0; step < Goldens.GeneratedIds.Length; step++)
        {
            var expected = Goldens.GeneratedLogits.AsSpan(step * vocab, vocab);
            worst = Math.Max(worst, RelativeError(last, expected));
            int token = ArgMax(last);
            Assert.AreEqual(Goldens.GeneratedIds[step], token, $"step {step}");
            last = model.Forward([token]);
        }
        Assert.IsTrue(worst < 1e-5, $"worst relative error {worst:E2}");
        Assert.AreEqual(Goldens.PromptIds.Length + Goldens.GeneratedIds.Length, model.Position);
    }

    [TestMethod]
    public void OneCallAndTokenByTokenAgree()
    {
        var whole = TinyModel();
        var stepwise = TinyModel();
        int vocab = whole.Config.VocabSize;
        int[] ids = [.. Goldens.PromptIds, .. Goldens.GeneratedIds.Take(6)];
        float[] all = whole.Forward(ids);
        for (int t = 0; t < ids.Length; t++)
        {
            float[] one = stepwise.Forward([ids[t]]);
            Assert.IsTrue(RelativeError(one, all.AsSpan(t * vocab, vocab)) < 1e-5, $"token {t}");
        }
        stepwise.Reset();
        Assert.AreEqual(0, stepwise.Position);
        Assert.IsTrue(RelativeError(stepwise.Forward(ids), all) < 1e-6);
    }
}
