using LlmBuild.Cli.Convert;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Tests;

/// <summary>The progress display's reading of the build's progress events and console output.</summary>
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

    private static BuildOutput Started(string stage) => new BuildOutput.Event(new BuildEvent(BuildEventKind.StageStarted, stage));
    private static BuildOutput Done(string stage, string piece, double seconds) => new BuildOutput.Event(new BuildEvent(BuildEventKind.PieceDone, stage, piece, seconds));
    private static BuildOutput UpToDate(string stage, string piece) => new BuildOutput.Event(new BuildEvent(BuildEventKind.PieceUpToDate, stage, piece));
    private static BuildOutput Line(string text) => new BuildOutput.Line(text);

    [TestMethod]
    public void StagesPiecesTotalsAndEta()
    {
        var (progress, clock) = Start();
        var e = progress.Observe(Started("ResolveLlmConfig"));
        Assert.IsInstanceOfType<ProgressEvent.StageStarted>(e);
        Assert.AreEqual(StageState.Running, progress.Stages[0].State);
        var other = (ProgressEvent.Other)progress.Observe(Line("  resolved qwen2 (qwen2), w4bf16, seq 64, 5 pieces"));
        Assert.IsFalse(other.IsError);

        var quantize = (ProgressEvent.StageStarted)progress.Observe(Started("QuantizeLlmWeights"));
        Assert.AreEqual("quantize", quantize.Stage.Label);
        Assert.AreEqual(3, quantize.Stage.Total, "owners.txt");
        Assert.AreEqual(StageState.Finished, progress.Stages[0].State);
        Assert.IsNull(quantize.Stage.Eta(clock.Now), "no estimate before the first piece");

        clock.Now = clock.Now.AddSeconds(2);
        var piece = (ProgressEvent.PieceFinished)progress.Observe(Done("QuantizeLlmWeights", "block_0", 1.75));
        Assert.AreEqual("block_0", piece.Piece);
        Assert.AreEqual(1.75, piece.Seconds);
        Assert.AreEqual(1, quantize.Stage.Done);
        var upToDate = (ProgressEvent.PieceFinished)progress.Observe(UpToDate("QuantizeLlmWeights", "embedding"));
        Assert.IsNull(upToDate.Seconds);
        Assert.AreEqual(2, quantize.Stage.Done);
        Assert.AreEqual(1, quantize.Stage.UpToDate);
        // One rebuilt piece took 2 s of wall time; one piece is left.
        Assert.AreEqual(TimeSpan.FromSeconds(2), quantize.Stage.Eta(clock.Now));
        clock.Now = clock.Now.AddSeconds(0.5);
        Assert.AreEqual(TimeSpan.FromSeconds(1.5), quantize.Stage.Eta(clock.Now));

        var export = (ProgressEvent.StageStarted)progress.Observe(Started("ExportLlmMlir"));
        Assert.AreEqual(5, export.Stage.Total, "pieces.txt");
        Assert.AreEqual(3, quantize.Stage.Done, "a finished stage is complete");
        Assert.IsInstanceOfType<ProgressEvent.Other>(progress.Observe(Line("  block_0: done in 1.00 s")), "log text is never progress");

        progress.Complete();
        Assert.IsTrue(progress.Stages.All(s => s.State == StageState.Finished));
        Assert.AreEqual(5, export.Stage.Done);
    }

    [TestMethod]
    public void ErrorLinesAreRecognised()
    {
        Assert.IsTrue(BuildProgress.Other("/m/config.json : error LLMB0003: config.json lacks hidden_size [/o/model.llmproj]").IsError);
        Assert.IsTrue(BuildProgress.Other("/o/model.llmproj : error MSB4019: The imported project was not found.").IsError);
        Assert.IsTrue(BuildProgress.Other("/o/model.llmproj(5,5): error : uncoded").IsError);
        Assert.IsFalse(BuildProgress.Other("/o/model.llmproj : warning LLMB0204: odd").IsError);
        Assert.IsFalse(BuildProgress.Other("  0 Error(s)").IsError);
    }

    [TestMethod]
    public void APieceOfAStageNotYetStartedStartsItAndVerifyIsNotShown()
    {
        var (progress, _) = Start();
        Assert.IsInstanceOfType<ProgressEvent.StageStarted>(progress.Observe(Done("CompileLlmPieces", "block_0", 3)));
        Assert.AreEqual(1, progress.Stages[3].Done);
        Assert.IsInstanceOfType<ProgressEvent.PieceFinished>(progress.Observe(Done("CompileLlmPieces", "lm_head", 1)));
        Assert.IsTrue(((ProgressEvent.Other)progress.Observe(Started("VerifyLlmBuild"))).IsNoise);
    }

    [TestMethod]
    public void EventsRoundTripThroughAProgressFileReadWhileItIsWritten()
    {
        string file = Path.Combine(TestPaths.NewTempDirectory("events"), "progress.jsonl");
        var reader = new BuildEventReader(file);
        Assert.AreEqual(0, reader.ReadNew().Count, "no file yet");
        var first = new BuildEvent(BuildEventKind.StageStarted, "QuantizeLlmWeights");
        var second = new BuildEvent(BuildEventKind.PieceDone, "QuantizeLlmWeights", "block_0", 0.25);
        BuildEventLog.Append(file, first);
        string line = second.ToJsonLine();
        File.AppendAllText(file, line[..5]);
        CollectionAssert.AreEqual(new[] { first }, reader.ReadNew().ToList(), "a torn last line waits");
        File.AppendAllText(file, line[5..] + "\nnot an event\n");
        CollectionAssert.AreEqual(new[] { second }, reader.ReadNew().ToList(), "the rest of the line completes it; foreign lines are skipped");
    }

    [TestMethod]
    public void PlainDisplayWritesOneLinePerEventAndErrorsToTheErrorStream()
    {
        var (progress, clock) = Start();
        var output = new StringWriter { NewLine = "\n" };
        var error = new StringWriter { NewLine = "\n" };
        var display = new PlainProgressDisplay(output, error);
        using var lines = new System.Collections.Concurrent.BlockingCollection<BuildOutput>();
        foreach (var item in new[]
        {
            Started("ResolveLlmConfig"), Line("  resolved qwen2"), Line(""), Started("QuantizeLlmWeights"),
            Done("QuantizeLlmWeights", "embedding", 0.5), UpToDate("QuantizeLlmWeights", "block_0"), Done("QuantizeLlmWeights", "lm_head", 0.25),
            Line("x.json : error LLMB0006: missing tensor"), Line("  Determining projects to restore..."), Line("Build succeeded."), Line("    0 Warning(s)"),
            Line("Time Elapsed 00:00:05.32"), Line("  Restored /tmp/o/model.llmproj (in 142 ms)."),
        }) lines.Add(item);
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
