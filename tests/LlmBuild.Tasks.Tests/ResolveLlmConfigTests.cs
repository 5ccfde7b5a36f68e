using Microsoft.Build.Utilities;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Stages;

namespace LlmBuild.Tasks.Tests;

[TestClass]
public sealed class ResolveLlmConfigTests
{
    private static string RepoRoot
    {
        get
        {
            string dir = AppContext.BaseDirectory;
            while (!File.Exists(Path.Combine(dir, "LlmBuild.sln"))) dir = Path.GetDirectoryName(dir) ?? throw new InvalidOperationException("repository root not found");
            return dir;
        }
    }

    private static string Example => Path.Combine(RepoRoot, "examples", "tiny-qwen2", "checkpoint");

    private static (ResolveLlmConfig Task, FakeBuildEngine Engine, string Dir) Create(Dictionary<string, string> options, bool dryRun = false)
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-tasktests", Guid.NewGuid().ToString("N"));
        var engine = new FakeBuildEngine();
        var task = new ResolveLlmConfig
        {
            BuildEngine = engine,
            Options = options.Select(kv => (Microsoft.Build.Framework.ITaskItem)new TaskItem(kv.Key, new Dictionary<string, string> { ["Value"] = kv.Value })).ToArray(),
            IntermediateDirectory = dir,
            DryRun = dryRun,
        };
        return (task, engine, dir);
    }

    private static Dictionary<string, string> Valid() => new() { ["ModelPath"] = Example, ["SeqLength"] = "64", ["Quantize"] = "w4bf16", ["QGroupSize"] = "64" };

    [TestMethod]
    public void WritesResolvedConfigurationAndSpecs()
    {
        var (task, engine, dir) = Create(Valid());
        Assert.IsTrue(task.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
        Assert.IsTrue(File.Exists(Path.Combine(dir, "resolved.json")));
        // The example ties lm_head to the embedding: the head reads the embedding owner's file (DESIGN §14).
        CollectionAssert.AreEqual(new[] { "embedding", "block_0", "block_1", "block_2", "block_3" }, File.ReadAllLines(Path.Combine(dir, "owners.txt")));
        Assert.IsTrue(File.Exists(Path.Combine(dir, "specs", "pieces", "block_cache_3.json")));
        Assert.IsTrue(File.Exists(Path.Combine(dir, "specs", "weights", "block_3.json")));
    }

    [TestMethod]
    public void WithAProgressFileTheStageReportsAnEventAndItsLineStaysQuiet()
    {
        var (task, engine, dir) = Create(Valid());
        string progress = Path.Combine(Path.GetTempPath(), $"llmbuild-progress-{Guid.NewGuid():N}.jsonl");
        task.ProgressFile = progress;
        Assert.IsTrue(task.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
        CollectionAssert.AreEqual(new[] { new BuildEvent(BuildEventKind.StageStarted, "ResolveLlmConfig") }, new BuildEventReader(progress).ReadNew().ToList());
        Assert.AreEqual(Microsoft.Build.Framework.MessageImportance.Normal, engine.Messages.Single(m => m.Message == "ResolveLlmConfig: running").Importance,
            "the reader of the progress file shows it; minimal-verbosity output does not repeat it");
        File.Delete(progress);
        Directory.Delete(dir, recursive: true);
    }

    [TestMethod]
    public void SpecsAreRewrittenOnlyWhenTheirContentChanges()
    {
        var (task, engine, dir) = Create(Valid());
        Assert.IsTrue(task.Execute());
        string weightSpec = Path.Combine(dir, "specs", "weights", "embedding.json");
        string blockWeightSpec = Path.Combine(dir, "specs", "weights", "block_0.json");
        string pieceSpec = Path.Combine(dir, "specs", "pieces", "block_0.json");
        var old = DateTime.UtcNow.AddHours(-1);
        File.SetLastWriteTimeUtc(weightSpec, old);
        File.SetLastWriteTimeUtc(pieceSpec, old);
        static string Identity(string spec) => System.Text.Json.JsonDocument.Parse(File.ReadAllText(spec)).RootElement.GetProperty("WeightsIdentity").GetString()!;
        string blockIdentity = Identity(blockWeightSpec);
        var options = Valid();
        options["SeqLength"] = "128";
        var (again, engine2, _) = Create(options);
        again.IntermediateDirectory = dir;
        Assert.IsTrue(again.Execute(), string.Join("\n", engine2.Errors.Select(e => e.Message)));
        Assert.AreEqual(old, File.GetLastWriteTimeUtc(weightSpec), "the embedding's file (no constants) does not depend on SeqLength");
        Assert.AreNotEqual(old, File.GetLastWriteTimeUtc(pieceSpec), "the block's graph does");
        // block_0's file holds the RoPE tables too: its spec changes, but not the identity of its stored weights.
        Assert.AreEqual(blockIdentity, Identity(blockWeightSpec), "the block's weights do not depend on SeqLength");
    }

    [TestMethod]
    public void ADifferentSdkRewritesEverySpec()
    {
        var options = Valid();
        options[ResolveStage.SdkHashOption] = "sdk-hash-1";
        var (task, engine, dir) = Create(options);
        Assert.IsTrue(task.Execute(), string.Join("\n", engine.Errors.Select(e => e.Message)));
        string[] specs = Directory.GetFiles(Path.Combine(dir, "specs"), "*.json", SearchOption.AllDirectories);
        Assert.AreEqual(5 + 11 + 2, specs.Length, "weight owners (the tied lm_head reads the embedding's), pieces, codegen and combine");
        foreach (string spec in specs)
            Assert.AreEqual($"{ResolveStage.Version} sdk-hash-1", System.Text.Json.JsonDocument.Parse(File.ReadAllText(spec)).RootElement.GetProperty("Sdk").GetString(), spec);
        var old = DateTime.UtcNow.AddHours(-1);
        foreach (string spec in specs) File.SetLastWriteTimeUtc(spec, old);

        Assert.IsTrue(Rerun(options), "same SDK");
        foreach (string spec in specs) Assert.AreEqual(old, File.GetLastWriteTimeUtc(spec), "same SDK, same spec: " + spec);

        options[ResolveStage.SdkHashOption] = "sdk-hash-2";
        Assert.IsTrue(Rerun(options), "another SDK");
        foreach (string spec in specs) Assert.AreNotEqual(old, File.GetLastWriteTimeUtc(spec), "another SDK, every stage reruns: " + spec);

        bool Rerun(Dictionary<string, string> o)
        {
            var (again, _, _) = Create(o);
            again.IntermediateDirectory = dir;
            return again.Execute();
        }
    }

    [TestMethod]
    public void DryRunPrintsEverythingAndWritesNothing()
    {
        var (task, engine, dir) = Create(Valid(), dryRun: true);
        Assert.IsTrue(task.Execute());
        Assert.IsFalse(Directory.Exists(dir));
        foreach (string s in new[] { "qwen2", "SeqLength", "64", "w4bf16", "block_cache_3", "lm_head", "activation dtype", "bf16" })
            StringAssert.Contains(engine.AllMessages, s);
    }

    [TestMethod]
    [DataRow("Quantize", "w3bf16", "LLMB0001")]
    [DataRow("SeqLength", "0", "LLMB0001")]
    [DataRow("Chip", "bm1690x", "LLMB0001")]
    [DataRow("QGroupSize", "48", "LLMB0201")]
    [DataRow("MaxInputLength", "100", "LLMB0005")]
    [DataRow("NumCore", "2", "LLMB0005")]
    public void InvalidOptionsAreCodedErrors(string name, string value, string code)
    {
        var options = Valid();
        options[name] = value;
        var (task, engine, dir) = Create(options);
        Assert.IsFalse(task.Execute());
        Assert.AreEqual(1, engine.Errors.Count);
        Assert.AreEqual(code, engine.Errors[0].Code, engine.Errors[0].Message);
        StringAssert.Contains(engine.Errors[0].Message, name);
        Assert.IsFalse(Directory.Exists(dir), "nothing written");
    }

    [TestMethod]
    public void UnknownModelTypeListsTheSupportedOnes()
    {
        string model = Path.Combine(Path.GetTempPath(), "llmbuild-tasktests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(model);
        File.WriteAllText(Path.Combine(model, "config.json"), """{"model_type": "gpt_bigcode", "hidden_size": 64}""");
        var options = Valid();
        options["ModelPath"] = model;
        var (task, engine, _) = Create(options);
        Assert.IsFalse(task.Execute());
        Assert.AreEqual("LLMB0004", engine.Errors.Single().Code);
        StringAssert.Contains(engine.Errors[0].Message, "gpt_bigcode");
        foreach (string t in new[] { "llama", "qwen2", "qwen3", "mistral" }) StringAssert.Contains(engine.Errors[0].Message, t);
    }

    [TestMethod]
    public void MissingModelFolderIsACodedError()
    {
        var options = Valid();
        options["ModelPath"] = "/nonexistent/model";
        var (task, engine, _) = Create(options);
        Assert.IsFalse(task.Execute());
        Assert.AreEqual("LLMB0002", engine.Errors.Single().Code);
    }
}
