using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// Verify splits a quantized build's distance from the f32 reference into the build's own error (against the f32 model on
/// its quantized-and-dequantized weights, held to the 16-bit thresholds) and the quantization's. A genuine w4bf16 build
/// of each family fixture passes the first part (FamilyGoldenTests.QuantizedBuildsVerify); a build that computes other
/// weights — here the adjacent input columns of linears swapped, what a wrong nibble order in the packed weights does —
/// fails it, and verify names the build as the cause.
/// </summary>
[TestClass]
public sealed class QuantizedVerifyTests
{
    /// <summary>A copy of <paramref name="dir"/> whose selected 2-D weights have columns 2i and 2i+1 swapped (written as f32).</summary>
    private static string SwapColumns(string dir, Func<string, bool> select)
    {
        string copy = TestFiles.TempDir();
        foreach (string f in Directory.GetFiles(dir).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        using ICheckpoint source = CheckpointLoader.Open(dir);
        var tensors = new List<TestFiles.Tensor>();
        int swapped = 0;
        foreach (string name in source.TensorNames)
        {
            TensorInfo info = source.GetInfo(name);
            var values = new float[info.ElementCount];
            source.ReadFloat32(name, values);
            if (info.Shape.Length == 2 && select(name))
            {
                for (int i = 0; i + 1 < values.Length; i += 2) (values[i], values[i + 1]) = (values[i + 1], values[i]);
                swapped++;
            }
            tensors.Add(new TestFiles.Tensor(name, "F32", info.Shape.ToArray(), TestFiles.Bytes(values)));
        }
        Assert.IsTrue(swapped > 0, "nothing was corrupted");
        TestFiles.WriteSafetensors(Path.Combine(copy, "model.safetensors"), tensors);
        return copy;
    }

    private static bool IsBlockLinear(string name) => name.Contains(".layers.", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal)
        && !name.Contains("norm", StringComparison.Ordinal);

    [TestMethod]
    [DataRow("llama", "every block linear")]
    [DataRow("phi3", "every block linear")]
    [DataRow("llama", "model.layers.1.mlp.down_proj.weight")]
    public void AW4BuildOfOtherWeightsFailsVerifyAsTheBuilds(string family, string corrupted)
    {
        var golden = FamilyGoldenTests.FamilyGolden.Load(family);
        string dir = SwapColumns(golden.Dir, corrupted == "every block linear" ? IsBlockLinear : name => name == corrupted);
        var good = ExampleBuild.Get("w4bf16", groupSize: 32, extra: [("ModelPath", golden.Dir), ("LlmModelName", family)]);
        var broken = ExampleBuild.Get("w4bf16", groupSize: 32, extra: [("ModelPath", dir), ("LlmModelName", family)]);

        VerifyReport r = VerifyStage.Measure(good.Model, broken.BModel, VerifyStage.FixedPrompt(good.Model), VerifyStage.DefaultDecodeSteps,
            VerifyThresholds.For(good.Model.Weights));
        foreach (string line in r.Table()) Console.WriteLine(line);

        Assert.IsFalse(r.Passed);
        Assert.IsNotNull(r.Quantization);
        Assert.IsFalse(r.Quantization.BuildPasses(VerifyThresholds.OfTheBuildItself), $"{family}: {corrupted} swapped, yet the build part passes");
        Assert.IsTrue(r.Failures.Any(f => f.Contains("the build, not the quantization, is off", StringComparison.Ordinal)), string.Join("; ", r.Failures));
    }
}

