using LlmBuild.Cli.Convert;
using LlmBuild.Core.Plan;

namespace LlmBuild.Cli.Tests;

/// <summary>The progress display's reading of the build's console output.</summary>
[TestClass]
public sealed class BuildProgressTests
{
    private sealed class Clock
    {
        public DateTime Now = new(2025, 1, 1, 0, 0, 0, DateTimeKind.Utc);
    }

    private static (BuildProgress Progress, Clock Clock) Start()
    {
        string obj = TestPaths.NewTempDirectory("progress");
        File.WriteAllText(Path.Combine(obj, "owners.txt"), "embedding\nblock_0\nlm_head\n");
        File.WriteAllText(Path.Combine(obj, "pieces.txt"), "embedding embedding\nembedding_cache embedding\nblock_0 block_0\nblock_cache_0 block_0\nlm_head lm_head\n");
        var clock = new Clock();
        return (new BuildProgress(obj, () => clock.Now), clock);
    }

    [TestMethod]
    public void StagesPiecesTotalsAndEta()
    {
        var (progress, clock) = Start();
        var e = progress.Observe("  ResolveLlmConfig: running");
        Assert.IsInstanceOfType<ProgressEvent.StageStarted>(e);
        Assert.AreEqual(StageState.Running, progress.Stages[0].State);
        var other = (ProgressEvent.Other)progress.Observe("  resolved qwen2 (qwen2), w4bf16, seq 64, 5 pieces");
        Assert.IsFalse(other.IsError);

        var quantize = (ProgressEvent.StageStarted)progress.Observe("1>  QuantizeLlmWeights: running");
        Assert.AreEqual("quantize", quantize.Stage.Label);
        Assert.AreEqual(3, quantize.Stage.Total, "owners.txt");
        Assert.AreEqual(StageState.Finished, progress.Stages[0].State);
        Assert.IsNull(quantize.Stage.Eta(clock.Now), "no estimate before the first piece");

        clock.Now = clock.Now.AddSeconds(2);
        var piece = (ProgressEvent.PieceFinished)progress.Observe("  block_0: done in 1.75 s");
        Assert.AreEqual("block_0", piece.Piece);
        Assert.AreEqual(1.75, piece.Seconds);
        Assert.AreEqual(1, quantize.Stage.Done);
        var upToDate = (ProgressEvent.PieceFinished)progress.Observe("embedding: up to date");
        Assert.IsNull(upToDate.Seconds);
        Assert.AreEqual(2, quantize.Stage.Done);
        Assert.AreEqual(1, quantize.Stage.UpToDate);
        // One rebuilt piece took 2 s of wall time; one piece is left.
        Assert.AreEqual(TimeSpan.FromSeconds(2), quantize.Stage.Eta(clock.Now));
        clock.Now = clock.Now.AddSeconds(0.5);
        Assert.AreEqual(TimeSpan.FromSeconds(1.5), quantize.Stage.Eta(clock.Now));

        var export = (ProgressEvent.StageStarted)progress.Observe("  ExportLlmMlir: running");
        Assert.AreEqual(5, export.Stage.Total, "pieces.txt");
        Assert.AreEqual(3, quantize.Stage.Done, "a finished stage is complete");
        Assert.IsInstanceOfType<ProgressEvent.Other>(progress.Observe("  block_0: wrote 3 tensors"), "only 'done in' and 'up to date' count");

        progress.Complete();
        Assert.IsTrue(progress.Stages.All(s => s.State == StageState.Finished));
        Assert.AreEqual(5, export.Stage.Done);
    }

    [TestMethod]
    public void ErrorsAreRecognisedAndPieceLinesOutsideAStageAreNotProgress()
    {
        var (progress, _) = Start();
        Assert.IsInstanceOfType<ProgressEvent.Other>(progress.Observe("block_0: done in 1.00 s"));
        var error = (ProgressEvent.Other)progress.Observe("/m/config.json : error LLMB0003: config.json lacks hidden_size [/o/model.llmproj]");
        Assert.IsTrue(error.IsError);
        Assert.IsTrue(((ProgressEvent.Other)progress.Observe("/o/model.llmproj : error MSB4019: The imported project was not found.")).IsError);
        Assert.IsTrue(((ProgressEvent.Other)progress.Observe("/o/model.llmproj(5,5): error : uncoded")).IsError);
        Assert.IsFalse(((ProgressEvent.Other)progress.Observe("/o/model.llmproj : warning LLMB0204: odd")).IsError);
        Assert.IsFalse(((ProgressEvent.Other)progress.Observe("  0 Error(s)")).IsError);
    }

    [TestMethod]
    public void PlainDisplayWritesOneLinePerEventAndErrorsToTheErrorStream()
    {
        var (progress, clock) = Start();
        var output = new StringWriter { NewLine = "\n" };
        var error = new StringWriter { NewLine = "\n" };
        var display = new PlainProgressDisplay(output, error);
        using var lines = new System.Collections.Concurrent.BlockingCollection<string>();
        foreach (string line in new[]
        {
            "  ResolveLlmConfig: running", "  resolved qwen2", "", "  QuantizeLlmWeights: running",
            "  embedding: done in 0.50 s", "  block_0: up to date", "  lm_head: done in 0.25 s",
            "x.json : error LLMB0006: missing tensor", "  Determining projects to restore...", "Build succeeded.", "    0 Warning(s)",
            "Time Elapsed 00:00:05.32", "  Restored /tmp/o/model.llmproj (in 142 ms).",
        }) lines.Add(line);
        lines.CompleteAdding();
        clock.Now = clock.Now.AddSeconds(1);
        display.Run(progress, lines, () => false);
        Assert.AreEqual("""
            [1/5] resolve
            resolved qwen2
            [2/5] quantize (3 pieces)
              embedding: done in 0.50 s (1/3, ETA 0:00)
              block_0: up to date (2/3)
              lm_head: done in 0.25 s (3/3)

            """.Replace("\r", ""), output.ToString());
        Assert.AreEqual("x.json : error LLMB0006: missing tensor\n", error.ToString());
        Assert.AreEqual(StageState.Running, progress.Stages[1].State, "a failed build does not mark stages finished");
    }
}
