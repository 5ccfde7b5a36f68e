using LlmBuild.Cli.Convert;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;

namespace LlmBuild.Cli.Tests;

/// <summary>The max_pixels family check and the reference's output names.</summary>
[TestClass]
public sealed class ConvertPlanTests
{
    [TestMethod]
    [DataRow("qwen2_vl", 784)]
    [DataRow("qwen2_5_vl", 784)]
    [DataRow("glm4v", 784)]
    [DataRow("minicpmv", 784)]
    [DataRow("qwen3_vl", 1024)]
    [DataRow("qwen3_5", 1024)]
    public void MaxPixelsMustBeAMultipleOfTheFamilysPixelUnit(string modelType, int unit)
    {
        string model = TestPaths.ConfigOnlyModel(modelType);
        // 672*896 = 602112 = 768*784 = 588*1024: a multiple of both units. The check passes and the next one (the
        // resolve stage's) reports the family as unsupported, or, for the supported qwen2_vl / qwen2_5_vl, the
        // config.json that holds nothing but model_type as incomplete: nothing ran in between.
        string next = LlmBuild.Core.Models.ModelFamilies.SupportedModelTypes.Contains(modelType) ? ErrorCodes.BadModelConfig : ErrorCodes.UnsupportedModelType;
        var ok = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(["-m", model, "-s", "64", "--max_pixels", "672,896"]));
        Assert.AreEqual(next, ok.Code);

        // 700*700 = 490000: 625*784, but not a multiple of 1024. 100*100 is a multiple of neither.
        foreach (var (pixels, valid) in new[] { ("700,700", unit == 784), ("100,100", false) })
        {
            var e = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(["-m", model, "-s", "64", "--max_pixels", pixels]));
            if (valid)
            {
                Assert.AreEqual(next, e.Code, pixels);
                continue;
            }
            Assert.AreEqual(ErrorCodes.InvalidProperty, e.Code, pixels);
            StringAssert.StartsWith(e.Message, $"--max_pixels: Property MaxPixels='{pixels}' is invalid");
            string side = unit == 784 ? "28*28" : "32*32";
            StringAssert.Contains(e.Message, $"{side} = {unit}, the pixel unit of {modelType}");
        }
    }

    [TestMethod]
    public void TheMaxPixelsCheckComesBeforeAnythingRuns()
    {
        // No weights at all: the pixel check fails first, without touching the checkpoint.
        string model = TestPaths.ConfigOnlyModel("qwen2_vl");
        string outDir = Path.Combine(TestPaths.NewTempDirectory("pixels"), "out");
        var (_, request) = TestPaths.Parse("-m", model, "-s", "64", "--max_pixels", "100,100", "-o", outDir);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => Commands.ConvertCommand.Run(request, new StringWriter()));
        Assert.AreEqual(ErrorCodes.InvalidProperty, e.Code);
        Assert.IsFalse(Directory.Exists(outDir), "nothing is written");
    }

    [TestMethod]
    public void AGgufModelIsNamedWithoutItsExtensionAndKeepsItsQuantization()
    {
        string gguf = Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "gguf", "tiny-llama-q8_0.gguf");
        var plan = TestPaths.Plan(["-m", gguf, "-s", "64"]);
        Assert.AreEqual("tiny-llama-q8_0_w8bf16_seq64_bm1684x_1dev_static", plan.BModelName);
    }

    [TestMethod]
    [DataRow("", "checkpoint_w4bf16_seq64_bm1684x_1dev_static")]
    [DataRow("--num_device 2 -g 32", "checkpoint_w4bf16_seq64_bm1684x_2dev_static")]
    [DataRow("--dynamic", "checkpoint_w4bf16_seq64_bm1684x_1dev_dynamic")]
    [DataRow("-c bm1688", "checkpoint_w4bf16_seq64_bm1688_2core_static")]
    [DataRow("-c bm1688 --num_core 1", "checkpoint_w4bf16_seq64_bm1688_1core_static")]
    [DataRow("-c cv186x --dynamic", "checkpoint_w4bf16_seq64_cv186x_1core_dynamic")]
    public void TheBModelIsNamedAsTheReferenceNamesIt(string flags, string expected)
    {
        var plan = TestPaths.Plan(TestPaths.Example(flags.Length == 0 ? [] : flags.Split(' ')));
        Assert.AreEqual(expected, plan.BModelName);
        Assert.AreEqual(expected, plan.Model.Name, "the build's LlmModelName");
        Assert.AreEqual(Path.Combine(plan.OutDir, expected + ".bmodel"), plan.BModelPath);
        string chip = plan.Options.Chip;
        Assert.AreEqual(Path.Combine(TestPaths.RepoRoot, $"checkpoint_{chip}_w4bf16"), plan.OutDir);
    }

    [TestMethod]
    public void TheModelNameIsTheFolderNameInLowerCase()
    {
        var options = new BuildOptions { ModelPath = "/m/Qwen2.5-0.5B-Instruct", SeqLength = 512, Chip = "bm1684x" };
        Assert.AreEqual("qwen2.5-0.5b-instruct_w4bf16_seq512_bm1684x_1dev_static", OutputNames.BModelName("qwen2.5-0.5b-instruct", "w4bf16", options));
        Assert.AreEqual("qwen2.5-0.5b-instruct_bm1684x_w4bf16", OutputNames.DefaultOutDir("qwen2.5-0.5b-instruct", "bm1684x", "w4bf16"));

        string dir = Path.Combine(TestPaths.NewTempDirectory("name"), "My-Model");
        Directory.CreateDirectory(dir);
        foreach (string f in Directory.EnumerateFiles(TestPaths.ExampleCheckpoint)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var plan = TestPaths.Plan(["-m", dir, "-s", "64", "-q", "bf16"], cwd: Path.GetDirectoryName(dir));
        Assert.AreEqual("my-model", plan.ModelName);
        Assert.AreEqual("my-model_bf16_seq64_bm1684x_1dev_static", plan.BModelName);
        Assert.AreEqual(Path.Combine(Path.GetDirectoryName(dir)!, "my-model_bm1684x_bf16"), plan.OutDir);
    }

    [TestMethod]
    public void DryRunPrintsTheResolvedConfigurationAndWritesNothing()
    {
        string outDir = Path.Combine(TestPaths.NewTempDirectory("dry"), "out");
        var (_, request) = TestPaths.Parse(TestPaths.Example("--dry_run", "-o", outDir, "--max_input_length", "32"));
        var output = new StringWriter();
        Assert.AreEqual(0, Commands.ConvertCommand.Run(request, output));
        string text = output.ToString();
        StringAssert.Contains(text, $"out_dir: {outDir}");
        StringAssert.Contains(text, "checkpoint_w4bf16_seq64_bm1684x_1dev_static.bmodel");
        StringAssert.Contains(text, "chip                     bm1684x, 1 device(s)");
        StringAssert.Contains(text, "quantize                 w4bf16 -> w4bf16");
        StringAssert.Contains(text, "seq_length               64 (prefill 32)");
        StringAssert.Contains(text, "max_shape                batch 1, seq 64, static");
        StringAssert.Contains(text, "family                 qwen2");
        StringAssert.Contains(text, "pieces                 11: embedding, embedding_cache, block_0");
        Assert.IsFalse(Directory.Exists(outDir));
    }

    [TestMethod]
    public void CalibrationFlagsReachTheResolvedConfigurationAndABadBudgetNamesItsFlag()
    {
        string outDir = Path.Combine(TestPaths.NewTempDirectory("dry-calib"), "out");
        var (_, request) = TestPaths.Parse(TestPaths.Example("--dry_run", "-o", outDir, "--quantize_method", "gptq", "--quantize_budget", "6bpw",
            "--calibration_samples", "4", "--calibration_seq_length", "32", "--calibration_seed", "3", "--gptq_act_order"));
        var output = new StringWriter();
        Assert.AreEqual(0, Commands.ConvertCommand.Run(request, output));
        string text = output.ToString();
        StringAssert.Contains(text, "gptq act-order, 4 × 32 tokens, seed 3, self-generated text");
        StringAssert.Contains(text, "QuantizeBudget");

        var (_, bad) = TestPaths.Parse(TestPaths.Example("--dry_run", "-o", outDir, "--quantize_budget", "lots"));
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ConvertPlan.Create(bad, Directory.GetCurrentDirectory()));
        Assert.AreEqual(ErrorCodes.BadQuantizeBudget, e.Code, e.Message);
        Assert.IsFalse(Directory.Exists(outDir));
    }

    /// <summary>Before the download: a folder with config.json and the tokenizer only (today's Qwen2.5-7B-Instruct).</summary>
    [TestMethod]
    public void DryRunWorksBeforeTheWeightsAreDownloaded()
    {
        string outDir = Path.Combine(TestPaths.NewTempDirectory("dry7b"), "out");
        string model = Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "qwen2.5-7b-instruct");
        var (_, request) = TestPaths.Parse("-m", model, "-s", "2048", "-q", "w4bf16", "--dry_run", "-o", outDir);
        var output = new StringWriter();
        Assert.AreEqual(0, Commands.ConvertCommand.Run(request, output));
        string text = output.ToString();
        StringAssert.Contains(text, "weights absent");
        StringAssert.Contains(text, "device memory");
        StringAssert.Contains(text, "pieces                 59:");
        Assert.IsFalse(Directory.Exists(outDir));
    }

    [TestMethod]
    public void VersionPrintsTheToolAndFormatVersionsWithoutOtherFlags()
    {
        var (_, request) = TestPaths.Parse("-V");
        var output = new StringWriter();
        Assert.AreEqual(0, Commands.ConvertCommand.Run(request, output));
        string[] lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        StringAssert.StartsWith(lines[0], "llmbuild 0.1.0");
        Assert.AreEqual($"resolved.json format {ResolvedModel.FormatVersion}", lines[1]);
        Assert.AreEqual("bmodel format 2.2", lines[2]);
    }
}
