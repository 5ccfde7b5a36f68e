using LlmBuild.Cli.Convert;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Tests;

/// <summary>Every llm_convert.py flag: its short and long names, its value, and what a bad value gives.</summary>
[TestClass]
public sealed class ConvertFlagsTests
{
    /// <summary>llm_convert.py's flags (as the issue lists them) → the SDK property each sets.</summary>
    private static readonly (string[] Names, string Property, bool IsSwitch)[] Expected =
    [
        (["-m", "--model_path"], "ModelPath", false),
        (["-s", "--seq_length"], "SeqLength", false),
        (["-q", "--quantize"], "Quantize", false),
        (["-g", "--q_group_size"], "QGroupSize", false),
        (["--symmetric"], "Symmetric", true),
        (["-c", "--chip", "--processor"], "Chip", false),
        (["--num_device"], "NumDevice", false),
        (["--distribute_strategy"], "DistributeStrategy", false),
        (["--num_core"], "NumCore", false),
        (["-b", "--batch"], "Batch", false),
        (["--max_input_length"], "MaxInputLength", false),
        (["--max_prefill_kv_length"], "MaxPrefillKvLength", false),
        (["--use_history_kv", "--use_block_with_kv"], "UseHistoryKv", true),
        (["--chunk_length"], "ChunkLength", false),
        (["--share_prompt"], "SharePrompt", true),
        (["--max_pixels"], "MaxPixels", false),
        (["--audio_length"], "AudioLength", false),
        (["--lora_max_rank"], "LoraMaxRank", false),
        (["--do_sample"], "DoSample", true),
        (["--embedding_disk"], "EmbeddingDisk", true),
        (["--dynamic"], "Dynamic", true),
        (["--only_mlir"], "OnlyMlir", true),
        (["--debug"], "Debug", true),
        (["--dry_run"], "DryRun", true),
        // LlmBuild's own flags, in the same style: calibrated quantization.
        (["--quantize_method"], "QuantizeMethod", false),
        (["--quantize_budget"], "QuantizeBudget", false),
        (["--calibration_samples"], "CalibrationSamples", false),
        (["--calibration_seq_length"], "CalibrationSeqLength", false),
        (["--calibration_seed"], "CalibrationSeed", false),
        (["--gptq_act_order"], "GptqActOrder", true),
        (["--calibration_text"], "LlmCalibrationText", false),
    ];

    [TestMethod]
    public void TheFlagTableIsLlmConvertsFlagList()
    {
        CollectionAssert.AreEqual(Expected.Select(e => $"{string.Join('/', e.Names)}={e.Property}{(e.IsSwitch ? "!" : "")}").ToArray(),
            ConvertFlags.Properties.Select(f => $"{f.Display}={f.Property}{(f.IsSwitch ? "!" : "")}").ToArray());
    }

    [TestMethod]
    public void EveryNameOfEveryValueFlagSetsItsProperty()
    {
        foreach (var (names, property, isSwitch) in Expected.Where(e => !e.IsSwitch))
            foreach (string name in names)
            {
                var (result, request) = TestPaths.Parse(name, "v,1");
                Assert.AreEqual(0, result.Errors.Count, name);
                Assert.AreEqual(1, request.Values.Count, name);
                Assert.AreEqual("v,1", request.Values[property], name);
            }
    }

    [TestMethod]
    public void EverySwitchSetsItsPropertyToTrueAndTakesNoValue()
    {
        foreach (var (names, property, _) in Expected.Where(e => e.IsSwitch))
        {
            var (result, request) = TestPaths.Parse(names[0]);
            Assert.AreEqual(0, result.Errors.Count, names[0]);
            Assert.AreEqual("true", request.Values[property]);
            Assert.AreEqual(1, request.Values.Count);
            // store_true, as in llm_convert.py: a value after the switch is an unexpected argument.
            Assert.AreNotEqual(0, TestPaths.Parse(names[0], "true").Result.Errors.Count, names[0]);
        }
    }

    [TestMethod]
    public void CliOnlyFlags()
    {
        foreach (string name in new[] { "-o", "--out_dir" })
        {
            var (result, request) = TestPaths.Parse(name, "some/dir");
            Assert.AreEqual(0, result.Errors.Count);
            Assert.AreEqual("some/dir", request.OutDir);
            Assert.AreEqual(0, request.Values.Count, "out_dir is not a build property");
        }
        Assert.IsTrue(TestPaths.Parse("--again").Request.Again);
        Assert.IsTrue(TestPaths.Parse("-V").Request.ShowVersion);
        Assert.IsTrue(TestPaths.Parse("--version").Request.ShowVersion);
        Assert.IsTrue(TestPaths.Parse("--dry_run").Request.DryRun);
        var none = TestPaths.Parse().Request;
        Assert.IsFalse(none.Again || none.ShowVersion || none.DryRun);
        Assert.IsNull(none.OutDir);
        Assert.AreEqual(0, none.Values.Count, "flags not given are left to the SDK's defaults");
    }

    [TestMethod]
    public void ARepeatedFlagOverridesTheEarlierOneAsInArgparse()
    {
        var (result, request) = TestPaths.Parse("-s", "64", "-q", "bf16", "--seq_length", "128", "-o", "a", "--out_dir", "b");
        Assert.AreEqual(0, result.Errors.Count);
        Assert.AreEqual("128", request.Values["SeqLength"]);
        Assert.AreEqual("b", request.OutDir);
        // One value per occurrence: a second word is an unexpected argument, not a second value.
        Assert.AreNotEqual(0, TestPaths.Parse("-s", "64", "128").Result.Errors.Count);
    }

    [TestMethod]
    [DataRow("--bogus")]
    [DataRow("-s")]
    [DataRow("--model_path")]
    [DataRow("extra-argument")]
    public void SyntaxErrorsAreParseErrors(string arg)
    {
        Assert.AreNotEqual(0, TestPaths.Parse(arg).Result.Errors.Count);
    }

    [TestMethod]
    public void DefaultsAreLlmConvertsDefaults()
    {
        var plan = TestPaths.Plan(["-m", TestPaths.ExampleCheckpoint, "-s", "64"]);
        var o = plan.Options;
        Assert.AreEqual("auto", o.Quantize);
        Assert.AreEqual(64, o.QGroupSize);
        Assert.IsFalse(o.Symmetric);
        Assert.AreEqual("bm1684x", o.Chip);
        Assert.AreEqual(1, o.NumDevice);
        Assert.AreEqual("tp", o.DistributeStrategy);
        Assert.AreEqual(0, o.NumCore);
        Assert.AreEqual(1, o.Batch);
        Assert.AreEqual(0, o.MaxInputLength);
        Assert.AreEqual(0, o.MaxPrefillKvLength);
        Assert.AreEqual("", o.MaxPixels);
        Assert.AreEqual(0, o.LoraMaxRank);
        Assert.IsFalse(o.UseHistoryKv || o.SharePrompt || o.DoSample || o.EmbeddingDisk || o.Dynamic || o.OnlyMlir || o.Debug || o.DryRun);
        // auto follows the checkpoint's torch_dtype (bfloat16), and the default out_dir is ./<model>_<chip>_<quantize>.
        Assert.AreEqual("bf16", plan.Model.Quantize);
        Assert.AreEqual(Path.Combine(TestPaths.RepoRoot, "checkpoint_bm1684x_bf16"), plan.OutDir);
    }

    [TestMethod]
    public void EveryFlagReachesTheOptions()
    {
        var plan = TestPaths.Plan(TestPaths.Example(
            "-g", "32", "--symmetric", "--processor", "bm1688", "--num_device", "1", "--distribute_strategy", "pp", "--num_core", "1",
            "-b", "2", "--max_input_length", "32", "--max_prefill_kv_length", "16", "--use_block_with_kv", "--share_prompt",
            "--lora_max_rank", "8", "--do_sample", "--embedding_disk", "--dynamic", "--only_mlir", "--debug", "--max_pixels", "100,100"));
        var o = plan.Options;
        Assert.AreEqual(TestPaths.ExampleCheckpoint, o.ModelPath);
        Assert.AreEqual(64, o.SeqLength);
        Assert.AreEqual("w4bf16", o.Quantize);
        Assert.AreEqual(32, o.QGroupSize);
        Assert.IsTrue(o.Symmetric);
        Assert.AreEqual("bm1688", o.Chip);
        Assert.AreEqual("pp", o.DistributeStrategy);
        Assert.AreEqual(1, o.NumCore);
        Assert.AreEqual(2, o.Batch);
        Assert.AreEqual(32, o.MaxInputLength);
        Assert.AreEqual(16, o.MaxPrefillKvLength);
        Assert.AreEqual(8, o.LoraMaxRank);
        Assert.AreEqual("100,100", o.MaxPixels, "text families have no pixel unit");
        Assert.IsTrue(o.UseHistoryKv && o.SharePrompt && o.DoSample && o.EmbeddingDisk && o.Dynamic && o.OnlyMlir && o.Debug);
        Assert.IsFalse(o.DryRun);
    }

    [TestMethod]
    public void ARelativeModelPathIsTakenFromTheCurrentFolder()
    {
        var plan = TestPaths.Plan(["-m", Path.Combine("examples", "tiny-qwen2", "checkpoint") + "/", "-s", "64", "-o", "out"]);
        Assert.AreEqual(TestPaths.ExampleCheckpoint, plan.Options.ModelPath);
        Assert.AreEqual(Path.Combine(TestPaths.RepoRoot, "out"), plan.OutDir);
    }

    [TestMethod]
    [DataRow("-s", "abc", "LLMB0001", "-s/--seq_length: Property SeqLength='abc'")]
    [DataRow("-s", "0", "LLMB0001", "-s/--seq_length:")]
    [DataRow("-s", "-5", "LLMB0001", "-s/--seq_length:")]
    [DataRow("-q", "int8", "LLMB0001", "-q/--quantize: Property Quantize='int8'")]
    [DataRow("-g", "-1", "LLMB0001", "-g/--q_group_size:")]
    [DataRow("-g", "x", "LLMB0001", "-g/--q_group_size:")]
    [DataRow("-c", "bm1686", "LLMB0001", "-c/--chip/--processor:")]
    [DataRow("--num_device", "0", "LLMB0001", "--num_device:")]
    [DataRow("--distribute_strategy", "dp", "LLMB0001", "--distribute_strategy:")]
    [DataRow("--num_core", "-1", "LLMB0001", "--num_core:")]
    [DataRow("-b", "0", "LLMB0001", "-b/--batch:")]
    [DataRow("--max_input_length", "-1", "LLMB0001", "--max_input_length:")]
    [DataRow("--max_input_length", "65", "LLMB0005", "MaxInputLength (65) is larger than SeqLength (64)")]
    [DataRow("--max_prefill_kv_length", "64", "LLMB0005", "MaxPrefillKvLength (64) must be smaller")]
    [DataRow("--max_pixels", "672", "LLMB0001", "--max_pixels: Property MaxPixels='672'")]
    [DataRow("--max_pixels", "a,b", "LLMB0001", "--max_pixels:")]
    [DataRow("--max_pixels", "0,28", "LLMB0001", "--max_pixels:")]
    [DataRow("--lora_max_rank", "-2", "LLMB0001", "--lora_max_rank:")]
    public void ABadValueGivesTheBuildsCodedError(string flag, string value, string code, string message)
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(TestPaths.Example(flag, value)));
        Assert.AreEqual(code, e.Code);
        StringAssert.Contains(e.Message, message);
    }

    [TestMethod]
    [DataRow("LLMB0005", "SharePrompt=true needs MaxPrefillKvLength", "--share_prompt")]
    [DataRow("LLMB0005", "cv186x boards have one chip", "-c cv186x --num_device 2")]
    [DataRow("LLMB0005", "NumCore=3 but bm1688 has 2 cores", "-c bm1688 --num_core 3")]
    [DataRow("LLMB0005", "NumCore=2 but bm1684x has 1 core", "--num_core 2")]
    public void CrossFlagChecks(string code, string message, string flags)
    {
        var e = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(TestPaths.Example(flags.Split(' '))));
        Assert.AreEqual(code, e.Code);
        StringAssert.Contains(e.Message, message);
    }

    [TestMethod]
    public void MissingRequiredFlagsAndModels()
    {
        var noModel = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(["-s", "64"]));
        Assert.AreEqual(ErrorCodes.InvalidProperty, noModel.Code);
        StringAssert.StartsWith(noModel.Message, "-m/--model_path: Property ModelPath=''");

        var noSeq = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(["-m", TestPaths.ExampleCheckpoint]));
        Assert.AreEqual(ErrorCodes.InvalidProperty, noSeq.Code);
        StringAssert.StartsWith(noSeq.Message, "-s/--seq_length:");

        string missing = Path.Combine(TestPaths.NewTempDirectory("missing"), "nothing-here");
        var notFound = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(["-m", missing, "-s", "64"]));
        Assert.AreEqual(ErrorCodes.ModelNotFound, notFound.Code);
    }

    [TestMethod]
    public void AnOutDirThatIsAFileIsRefused()
    {
        string file = Path.Combine(TestPaths.NewTempDirectory("file"), "out");
        File.WriteAllText(file, "");
        var e = Assert.ThrowsExactly<LlmBuildException>(() => TestPaths.Plan(TestPaths.Example("-o", file)));
        Assert.AreEqual(ErrorCodes.BadOutputDirectory, e.Code);
    }
}
