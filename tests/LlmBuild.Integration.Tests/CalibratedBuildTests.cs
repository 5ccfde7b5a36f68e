using System.Text.Json;

namespace LlmBuild.Integration.Tests;

/// <summary>
/// A calibrated build through the real `dotnet build`: QuantizeMethod=gptq with mixed precision under QuantizeBudget on
/// a few short self-generated calibration sequences. It verifies; the widths and the report land in obj/…/llm/calibration/;
/// a second build does nothing; a group-size change re-quantizes from the cached statistics; a deleted widths.json is
/// chosen again.
/// </summary>
[TestClass]
public sealed class CalibratedBuildTests
{
    [TestCleanup]
    public void DeleteTestDirectories() => BuildHarness.DeleteTestDirectories();

    private static Dictionary<string, string> Properties(string groupSize = "64")
    {
        var props = BuildHarness.DefaultProperties();
        props["QGroupSize"] = groupSize;
        props["QuantizeMethod"] = "gptq";
        props["QuantizeBudget"] = "6.0bpw";
        props["CalibrationSamples"] = "4";
        props["CalibrationSeqLength"] = "32";
        return props;
    }

    [TestMethod]
    public void AGptqMixedPrecisionBuildVerifiesAndRebuildsIncrementally()
    {
        string dir = BuildHarness.NewTempDirectory("calibrated");
        BuildHarness.WriteProject(dir, Properties());
        var first = BuildHarness.Build(dir);
        first.AssertSucceeded();
        StringAssert.Contains(first.Output, "mixed precision under QuantizeBudget=6bpw");
        string calibration = Path.Combine(dir, "obj", "Debug", "llm", "calibration");
        string widths = Path.Combine(calibration, "widths.json");
        int eight;
        using (var doc = JsonDocument.Parse(File.ReadAllText(widths)))
        {
            var linears = doc.RootElement.GetProperty("Linears").EnumerateArray().ToList();
            Assert.AreEqual(28, linears.Count, "every block linear of the example");
            eight = linears.Count(l => l.GetProperty("Bits").GetInt32() == 8);
            Assert.IsTrue(eight > 0 && eight < 28, $"{eight} linears at w8");
        }
        using (var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(calibration, "quantization.json"))))
        {
            Assert.AreEqual("6bpw", report.RootElement.GetProperty("Budget").GetString());
            var lines = report.RootElement.GetProperty("Linears").EnumerateArray().ToList();
            Assert.AreEqual(28, lines.Count, "the gptq report lists every linear");
            Assert.AreEqual(eight, lines.Count(l => l.GetProperty("Bits").GetInt32() == 8), "with the width chosen for it");
        }
        using (var verify = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "obj", "Debug", "llm", "verify.json"))))
            Assert.AreEqual(0, verify.RootElement.GetProperty("failures").GetArrayLength());

        var again = BuildHarness.Build(dir);
        again.AssertSucceeded();
        Assert.AreEqual(0, again.RanTasks.Count(t => t != Stages.Resolve), "a no-op rebuild runs no stage task: " + string.Join(", ", again.RanTasks));

        // What a kill between the last weight file and the report leaves: the report comes back, the same bytes.
        string reportPath = Path.Combine(calibration, "quantization.json");
        string reportText = File.ReadAllText(reportPath);
        File.Delete(reportPath);
        BuildHarness.Build(dir).AssertSucceeded();
        Assert.AreEqual(reportText, File.ReadAllText(reportPath), "the report written again");
        var afterReport = BuildHarness.Build(dir);
        afterReport.AssertSucceeded();
        Assert.AreEqual(0, afterReport.RanTasks.Count(t => t != Stages.Resolve), "no-op after the report came back: " + string.Join(", ", afterReport.RanTasks));

        File.Delete(widths);
        var rechosen = BuildHarness.Build(dir);
        rechosen.AssertSucceeded();
        Assert.IsTrue(File.Exists(widths), "widths.json chosen again");
        StringAssert.Contains(rechosen.Output, "calibration statistics up to date");
        var quiet = BuildHarness.Build(dir);
        quiet.AssertSucceeded();
        Assert.IsTrue(File.Exists(widths), "kept by the next build (it is a FileWrite of every build, not only the one that wrote it)");
        Assert.AreEqual(0, quiet.RanTasks.Count(t => t != Stages.Resolve), "no-op again after the widths were chosen anew: " + string.Join(", ", quiet.RanTasks));

        BuildHarness.WriteProject(dir, Properties(groupSize: "32"));
        var regrouped = BuildHarness.Build(dir);
        regrouped.AssertSucceeded();
        StringAssert.Contains(regrouped.Output, "calibration statistics up to date", "a group-size change reuses the forward passes");
    }
}
