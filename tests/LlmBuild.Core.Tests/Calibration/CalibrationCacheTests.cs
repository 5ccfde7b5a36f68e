using LlmBuild.Core.Calibration;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Graph;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Tests.Calibration;

/// <summary>The calibration statistics cache and the calibration text: what reruns the forward, what does not.</summary>
[TestClass]
public sealed class CalibrationCacheTests
{
    private static ResolvedModel Model(int groupSize, CalibrationSettings settings)
    {
        string dir = TestResolver.TinyModelDir;
        return TestResolver.Resolve(dir, TestResolver.Options(dir) with { Quantize = "w4bf16", QGroupSize = groupSize }) with { Calibration = settings };
    }

    [TestMethod]
    public void AGroupSizeOrMethodChangeReusesTheStatisticsAndASeedChangeDoesNot()
    {
        string root = Path.Combine(Path.GetTempPath(), "llmb-calib-cache-" + Guid.NewGuid().ToString("N"));
        try
        {
            var gptq = new CalibrationSettings("gptq", 2, 16, 0, false, []);
            var log = new List<string>();
            string first = QuantizeStage.Calibrate(Model(64, gptq), root, [], log.Add)!;
            Assert.IsTrue(log.Any(l => l.StartsWith("layer 3: statistics of 32 tokens", StringComparison.Ordinal)), string.Join("\n", log));
            byte[] layer0 = File.ReadAllBytes(Path.Combine(first, LayerStatistics.FileName(0)));

            log.Clear();
            string second = QuantizeStage.Calibrate(Model(32, gptq with { Method = "awq", ActOrder = true }), root, [], log.Add)!;
            Assert.AreEqual(first, second);
            CollectionAssert.AreEqual(new[] { $"calibration statistics up to date ({first})" }, log);

            log.Clear();
            string reseeded = QuantizeStage.Calibrate(Model(64, gptq with { Seed = 1 }), root, [], log.Add)!;
            Assert.AreNotEqual(first, reseeded);
            Assert.IsTrue(log.Any(l => l.StartsWith("layer 0: statistics", StringComparison.Ordinal)));

            // Deterministic: the same settings in a fresh folder give the same bytes.
            string again = QuantizeStage.Calibrate(Model(64, gptq), root + "-again", [], _ => { })!;
            CollectionAssert.AreEqual(layer0, File.ReadAllBytes(Path.Combine(again, LayerStatistics.FileName(0))));
        }
        finally
        {
            foreach (string d in new[] { root, root + "-again" }) if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        }
    }

    [TestMethod]
    public void TextFilesGiveSeededWindowsAndShortOrMissingTextIsACodedError()
    {
        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, string.Concat(Enumerable.Range(0, 200).Select(i => $"Fortune number {i} says the road is long. ")));
            Tokenizer tokenizer = TokenizerLoader.Load(TestResolver.TinyModelDir);
            var settings = new CalibrationSettings("gptq", 4, 32, 7, false, [file]);
            int[][] a = CalibrationText.FromFiles(settings, tokenizer), b = CalibrationText.FromFiles(settings, tokenizer);
            Assert.AreEqual(4, a.Length);
            Assert.IsTrue(a.All(s => s.Length == 32));
            for (int i = 0; i < a.Length; i++) CollectionAssert.AreEqual(a[i], b[i]);

            var tooShort = settings with { SeqLength = 100000 };
            var e = Assert.ThrowsExactly<LlmBuildException>(() => CalibrationText.FromFiles(tooShort, tokenizer));
            Assert.AreEqual(ErrorCodes.BadCalibrationText, e.Code);
            var missing = Assert.ThrowsExactly<LlmBuildException>(() => CalibrationSettings.Read(new Dictionary<string, string?>
            {
                ["QuantizeMethod"] = "gptq", ["LlmCalibrationText"] = file + ".missing",
            }));
            Assert.AreEqual(ErrorCodes.BadCalibrationText, missing.Code);
            Assert.IsNull(CalibrationSettings.Read(new Dictionary<string, string?>()), "rtn (the default) calibrates nothing");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [TestMethod]
    public void BuildsCalibrationCannotServeAreRefused()
    {
        var settings = new CalibrationSettings("awq", 2, 16, 0, false, []);
        string dir = TestResolver.TinyModelDir;
        var bf16 = TestResolver.Resolve(dir, TestResolver.Options(dir) with { Quantize = "bf16" });
        var e = Assert.ThrowsExactly<LlmBuildException>(() => settings.CheckModel(bf16));
        Assert.AreEqual(ErrorCodes.CalibrationUnsupported, e.Code);
        StringAssert.Contains(e.Message, "QuantizeMethod=rtn");
    }
}
