using System.Text.Json.Nodes;
using LlmBuild.Core.Numpy;

namespace LlmBuild.Cli.Tests;

/// <summary>`llmbuild reference-logits --image`: the f32 reference with an image reproduces Hugging Face's Qwen2-VL logits.</summary>
[TestClass]
[DoNotParallelize]
public sealed class ImageCommandTests
{
    private static string Fixture => Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "families", "qwen2_vl");

    [TestMethod]
    public void ReferenceLogitsWithAnImageMatchHuggingFace()
    {
        var json = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture, "golden-open.json")))!;
        string ids = string.Join(",", ((JsonArray)json["prompt_ids"]!).Select(n => (int)n!));
        string output = Path.Combine(TestPaths.NewTempDirectory("vl"), "logits.npy");
        int exit = Program.Main(["reference-logits", Fixture, "--ids", ids, "--image", Path.Combine(Fixture, "image-open.png"), "--all-positions", "--out", output]);
        Assert.AreEqual(0, exit);
        var (shape, actual) = NpyFile.ReadFloat32(output);
        var (goldenShape, expected) = NpyFile.ReadFloat32(Path.Combine(Fixture, "golden-open.logits.npy"));
        CollectionAssert.AreEqual(goldenShape, shape);
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < actual.Length; i++) { dot += (double)actual[i] * expected[i]; na += (double)actual[i] * actual[i]; nb += (double)expected[i] * expected[i]; }
        double cosine = dot / Math.Sqrt(na * nb);
        Assert.IsTrue(cosine >= 0.99999, $"cosine {cosine}");
    }

    [TestMethod]
    public void ACorruptImageIsACodedErrorNotACrash()
    {
        string dir = TestPaths.NewTempDirectory("vl");
        string bad = Path.Combine(dir, "bad.png");
        File.WriteAllBytes(bad, [0x89, 0x50, 0x4E, 0x47, 1, 2, 3]);
        var error = new StringWriter();
        var old = Console.Error;
        Console.SetError(error);
        try
        {
            int exit = Program.Main(["reference-logits", Fixture, "--ids", "981,992", "--image", bad, "--out", Path.Combine(dir, "x.npy")]);
            Assert.AreEqual(1, exit);
        }
        finally { Console.SetError(old); }
        StringAssert.Contains(error.ToString(), "error LLMB0143");
    }
}
