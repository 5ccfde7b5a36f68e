using System.Text.Json.Nodes;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Checkpoints;
using LlmBuild.Core.Tests.Codegen;

namespace LlmBuild.Core.Tests.Families;

/// <summary>
/// The language model of a multimodal gemma3 checkpoint (Gemma3ForConditionalGeneration): config.json's text_config over
/// Gemma3TextConfig's defaults, <c>language_model.</c> tensor names, the vision tower and projector ignored with LLMB0160.
/// The tiny checkpoint is the gemma3_text fixture with its tensors renamed as the multimodal model saves them, two
/// vision-tower tensors added and its config nested in text_config, so Hugging Face's gemma3_text goldens still apply.
/// </summary>
[TestClass]
public sealed class Gemma3MultimodalTests
{
    private static readonly string[] TowerTensors =
        ["multi_modal_projector.mm_input_projection_weight", "vision_tower.vision_model.embeddings.patch_embedding.weight"];

    private static readonly Lazy<string> Checkpoint = new(() => MakeCheckpoint(newerLayout: false));

    /// <summary>The same checkpoint as transformers ≥ 4.52 saves it: model.language_model.*, model.vision_tower.*, model.multi_modal_projector.*.</summary>
    private static readonly Lazy<string> NewerCheckpoint = new(() => MakeCheckpoint(newerLayout: true));

    private static string Saved(string name, bool newerLayout) =>
        !newerLayout ? name
        : name.StartsWith("language_model.model.", StringComparison.Ordinal) ? "model.language_model." + name["language_model.model.".Length..]
        : name.StartsWith("language_model.lm_head.", StringComparison.Ordinal) ? "lm_head." + name["language_model.lm_head.".Length..]
        : "model." + name;

    private static string MakeCheckpoint(bool newerLayout)
    {
        string source = FamilyGoldenTests.FamilyGolden.Load("gemma3_text").Dir;
        string dir = TestFiles.TempDir();
        using (ICheckpoint text = CheckpointLoader.Open(source))
        {
            var tensors = text.TensorNames.Select(name =>
            {
                TensorInfo info = text.GetInfo(name);
                var bytes = new byte[info.ByteLength];
                text.ReadRaw(name, bytes);
                return new TestFiles.Tensor(Saved("language_model." + name, newerLayout), "BF16", info.Shape, bytes);
            }).ToList();
            tensors.Add(new TestFiles.Tensor(Saved(TowerTensors[0], newerLayout), "BF16", [8, 64], new byte[8 * 64 * 2]));
            tensors.Add(new TestFiles.Tensor(Saved(TowerTensors[1], newerLayout), "BF16", [8, 3, 2, 2], new byte[8 * 3 * 2 * 2 * 2]));
            TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
        }
        var textConfig = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!;
        foreach (string topLevel in new[] { "architectures", "torch_dtype", "transformers_version", "eos_token_id" }) textConfig.Remove(topLevel);
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("Gemma3ForConditionalGeneration"), ["model_type"] = "gemma3",
            ["boi_token_index"] = 998, ["eoi_token_index"] = 999, ["image_token_index"] = 997, ["mm_tokens_per_image"] = 4,
            ["eos_token_id"] = new JsonArray(1, 106), ["torch_dtype"] = "bfloat16", ["transformers_version"] = "4.50.0.dev0",
            ["text_config"] = textConfig,
            ["vision_config"] = new JsonObject { ["model_type"] = "siglip_vision_model", ["hidden_size"] = 8, ["patch_size"] = 2 },
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        File.Copy(Path.Combine(source, "generation_config.json"), Path.Combine(dir, "generation_config.json"));
        return dir;
    }

    private static FamilyGoldenTests.FamilyGolden Golden => FamilyGoldenTests.FamilyGolden.Load("gemma3_text") with { Dir = Checkpoint.Value };

    [TestMethod]
    public void TheRealGemma3ConfigIsReadFromTextConfigOverTheDefaults()
    {
        ModelConfig c = ModelConfig.Load(Path.Combine(ExampleBuild.RepoRoot, "tests", "fixtures", "gemma3-4b-it"));
        Assert.AreEqual("gemma3", c.ModelType);
        Assert.AreEqual("gemma3_multimodal", ModelFamilies.Get(c.ModelType).Name);
        // From text_config:
        Assert.AreEqual((2560, 10240, 34), (c.HiddenSize, c.IntermediateSize, c.NumLayers));
        Assert.AreEqual(("linear", 8.0), (c.RopeScaling!.Type, c.RopeScaling.Factor));
        // From Gemma3TextConfig's defaults:
        Assert.AreEqual((8, 4, 256, 262208), (c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize));
        Assert.AreEqual((1e6, 10000.0, 1e-6), (c.RopeTheta, c.LocalRopeTheta!.Value, c.RmsNormEps));
        Assert.AreEqual(1 / 16.0, c.ScoreScale, 1e-12, "query_pre_attn_scalar 256");
        Assert.AreEqual("gelu_pytorch_tanh", c.HiddenAct);
        Assert.IsTrue(c.TieWordEmbeddings);
        Assert.AreEqual((0.0, 0.0), (c.AttentionSoftcap, c.FinalLogitSoftcap));
        // sliding_window 1024 on all but every 6th layer; the top level's dtype and end-of-sequence ids.
        CollectionAssert.AreEqual(Enumerable.Range(0, 34).Select(l => (l + 1) % 6 == 0 ? 0 : 1024).ToArray(), c.SlidingWindows.ToArray());
        Assert.AreEqual("bfloat16", c.TorchDtype);
        CollectionAssert.IsSubsetOf(new[] { 1, 106 }, c.EosTokenIds.ToArray());
    }

    [TestMethod]
    public void ResolveBuildsTheLanguageModelAndListsTheIgnoredVisionTower()
    {
        var warnings = new List<LlmBuildWarning>();
        ResolvedModel model = ResolveStage.Resolve(new Dictionary<string, string?> { ["ModelPath"] = Checkpoint.Value, ["SeqLength"] = "64", ["Quantize"] = "bf16" }, warnings);
        Assert.AreEqual("gemma3_multimodal", model.Family);
        Assert.IsTrue(model.Owners.SelectMany(o => o.Entries).All(e => e.SourceTensor.StartsWith("language_model.model.", StringComparison.Ordinal)));
        LlmBuildWarning tower = warnings.Single(w => w.Code == ErrorCodes.VisionTowerIgnored);
        foreach (string t in TowerTensors) StringAssert.Contains(tower.Message, t);
        StringAssert.Contains(tower.Message, "2 tensor(s)");
        Assert.IsFalse(warnings.Any(w => w.Code == ErrorCodes.UnknownConfigField), string.Join("\n", warnings));
    }

    [TestMethod]
    public void AnUnknownTensorBesideTheTowerIsStillRefused()
    {
        string dir = TestFiles.TempDir();
        foreach (string f in new[] { "config.json", "generation_config.json" }) File.Copy(Path.Combine(Checkpoint.Value, f), Path.Combine(dir, f));
        using (ICheckpoint c = CheckpointLoader.Open(Checkpoint.Value))
        {
            var tensors = c.TensorNames.Select(n => { var i = c.GetInfo(n); var b = new byte[i.ByteLength]; c.ReadRaw(n, b); return new TestFiles.Tensor(n, "BF16", i.Shape, b); }).ToList();
            tensors.Add(new TestFiles.Tensor("language_model.model.layers.0.self_attn.extra.weight", "BF16", [2], new byte[4]));
            TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
        }
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(new Dictionary<string, string?> { ["ModelPath"] = dir, ["SeqLength"] = "64", ["Quantize"] = "bf16" }));
        Assert.AreEqual(ErrorCodes.UnusedTensor, e.Code);
        StringAssert.Contains(e.Message, "self_attn.extra.weight");
        Assert.IsFalse(e.Message.Contains("vision_tower", StringComparison.Ordinal), e.Message);
    }

    [TestMethod]
    public void TheReferenceForwardReproducesHuggingFaceFromTheMultimodalCheckpoint()
    {
        var golden = Golden;
        using ICheckpoint checkpoint = CheckpointLoader.Open(golden.Dir);
        var reference = new ReferenceModel(checkpoint, ModelConfig.Load(golden.Dir));
        double worst = FamilyGoldenTests.Compare(golden, ids => reference.Forward(ids), id => reference.Forward([id]), "gemma3 multimodal reference");
        Console.WriteLine($"gemma3 (multimodal checkpoint): reference forward worst cosine vs Hugging Face's gemma3_text goldens {worst:F7}");
        Assert.IsTrue(worst >= 0.99999, $"worst cosine {worst}");
    }

    [TestMethod]
    public void TheBf16BuildReproducesHuggingFaceFromTheMultimodalCheckpoint()
    {
        var golden = Golden;
        var built = ExampleBuild.Get("bf16", extra: [("ModelPath", golden.Dir), ("LlmModelName", "gemma3-multimodal")]);
        using var emu = LlmEmulator.Load(built.BModel);
        double worst = FamilyGoldenTests.Compare(golden, ids => emu.Prefill(ids, allPositions: true), id => emu.Decode(id), "gemma3 multimodal bf16 build");
        Console.WriteLine($"gemma3 (multimodal checkpoint): bf16 build worst cosine vs Hugging Face's gemma3_text goldens {worst:F7}");
        Assert.IsTrue(worst >= 0.9999, $"worst cosine {worst}");
    }

    [TestMethod]
    public void TheW8Bf16BuildOfTheMultimodalCheckpointPassesVerify() => FamilyGoldenTests.AssertW8Bf16Verifies(Checkpoint.Value, "gemma3-multimodal");

    [TestMethod]
    public void TheNewerModelLanguageModelLayoutBuildsAndReproducesHuggingFace()
    {
        var warnings = new List<LlmBuildWarning>();
        ResolvedModel model = ResolveStage.Resolve(new Dictionary<string, string?> { ["ModelPath"] = NewerCheckpoint.Value, ["SeqLength"] = "64", ["Quantize"] = "bf16" }, warnings);
        Assert.AreEqual("gemma3_multimodal", model.Family);
        StringAssert.Contains(warnings.Single(w => w.Code == ErrorCodes.VisionTowerIgnored).Message, "2 tensor(s)");
        using (ICheckpoint raw = CheckpointLoader.Open(NewerCheckpoint.Value))
            Assert.IsTrue(raw.TensorNames.All(n => n.StartsWith("model.", StringComparison.Ordinal)), "the checkpoint has only the newer names");

        var golden = Golden with { Dir = NewerCheckpoint.Value };
        using (ICheckpoint checkpoint = CheckpointLoader.Open(golden.Dir))
        {
            var reference = new ReferenceModel(checkpoint, ModelConfig.Load(golden.Dir));
            double r = FamilyGoldenTests.Compare(golden, ids => reference.Forward(ids), id => reference.Forward([id]), "gemma3 newer layout reference");
            Assert.IsTrue(r >= 0.99999, $"reference worst cosine {r}");
        }
        var built = ExampleBuild.Get("bf16", extra: [("ModelPath", golden.Dir), ("LlmModelName", "gemma3-multimodal-newer")]);
        using var emu = LlmEmulator.Load(built.BModel);
        double worst = FamilyGoldenTests.Compare(golden, ids => emu.Prefill(ids, allPositions: true), id => emu.Decode(id), "gemma3 newer layout bf16 build");
        Console.WriteLine($"gemma3 (model.language_model.* checkpoint): bf16 build worst cosine vs Hugging Face's gemma3_text goldens {worst:F7}");
        Assert.IsTrue(worst >= 0.9999, $"worst cosine {worst}");
        FamilyGoldenTests.AssertW8Bf16Verifies(golden.Dir, "gemma3-multimodal-newer");
    }

    [TestMethod]
    public void ACheckpointWithBothLayoutsIsRefused()
    {
        string dir = TestFiles.TempDir();
        foreach (string f in new[] { "config.json", "generation_config.json" }) File.Copy(Path.Combine(Checkpoint.Value, f), Path.Combine(dir, f));
        var tensors = new List<TestFiles.Tensor>();
        foreach (string source in new[] { Checkpoint.Value, NewerCheckpoint.Value })
        {
            using ICheckpoint c = CheckpointLoader.Open(source);
            tensors.AddRange(c.TensorNames.Select(n => { var i = c.GetInfo(n); var b = new byte[i.ByteLength]; c.ReadRaw(n, b); return new TestFiles.Tensor(n, "BF16", i.Shape, b); }));
        }
        TestFiles.WriteSafetensors(Path.Combine(dir, "model.safetensors"), tensors);
        var e = Assert.ThrowsExactly<LlmBuildException>(() => ExampleBuild.Resolve(new Dictionary<string, string?> { ["ModelPath"] = dir, ["SeqLength"] = "64", ["Quantize"] = "bf16" }));
        Assert.AreEqual(ErrorCodes.MixedCheckpointLayout, e.Code);
        StringAssert.Contains(e.Message, "model.language_model.");
    }
}
