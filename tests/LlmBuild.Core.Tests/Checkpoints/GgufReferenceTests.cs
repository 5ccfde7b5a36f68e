using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Models;
using LlmBuild.Core.Reference;

namespace LlmBuild.Core.Tests.Checkpoints;

/// <summary>
/// The f32 reference forward read straight from each GGUF (and the FP8 checkpoint) reproduces Hugging Face's logits on
/// the exactly dequantized weights: proof that names, shapes, the Q/K un-permutation, the synthesized config and every
/// dequantizer in the fixtures (Q8_0, Q4_0, Q4_K, Q6_K, FP8 E4M3 blocks) are right.
/// </summary>
[TestClass]
public sealed class GgufReferenceTests
{
    public static IEnumerable<object[]> Fixtures =>
    [
        ["tiny-qwen2-fortunes-q8_0"], ["tiny-qwen2-fortunes-q4_0"], ["tiny-llama-q4_k_m"], ["tiny-llama-q8_0"], ["fp8"],
    ];

    internal static GoldenFixture Fixture(string name) => name == "fp8" ? GoldenFixture.Fp8() : GoldenFixture.Gguf(name);

    [TestMethod]
    [DynamicData(nameof(Fixtures))]
    public void ReferenceForwardReproducesHuggingFace(string name)
    {
        var fixture = Fixture(name);
        using ICheckpoint checkpoint = CheckpointLoader.Open(fixture.ModelPath);
        var config = ModelConfig.Load(fixture.ModelPath);
        var model = new ReferenceModel(checkpoint, config);
        var (worst, greedy) = fixture.Compare(config.VocabSize, ids => model.Forward(ids), id => model.Forward([id]));
        Console.WriteLine($"{name}: worst cosine {worst:F7}, greedy {string.Join(",", greedy)}");
        CollectionAssert.AreEqual(fixture.GeneratedIds, greedy, $"{name}: greedy ids");
        Assert.IsTrue(worst >= 0.99999, $"{name}: worst cosine {worst}");
    }
}
