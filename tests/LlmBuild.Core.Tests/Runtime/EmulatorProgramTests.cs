using LlmBuild.Core.BModel;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Reference;
using LlmBuild.Core.Runtime;
using LlmBuild.Core.Stages;
using LlmBuild.Core.Tests.Codegen;
using LlmBuild.Core.Tests.Reference;

namespace LlmBuild.Core.Tests.Runtime;

[TestClass]
public sealed class EmulatorProgramTests
{
    /// <summary>
    /// Each net's program, run by the emulator from the combined bmodel, computes what the graph interpreter (the op
    /// semantics, with its own dequantization of int4 weights) computes for the same inputs.
    /// </summary>
    [TestMethod]
    [DataRow("w4bf16", "block_0")]
    [DataRow("w4bf16", "block_cache_1")]
    [DataRow("w8bf16", "block_2")]
    [DataRow("bf16", "lm_head")]
    public void NetMatchesGraphInterpreter(string quantize, string piece)
    {
        var built = ExampleBuild.Get(quantize);
        var model = built.Model;
        PieceGraph graph = PieceGraphBuilder.Build(model, model.Piece(piece));
        using var rt = EmulatorRuntime.Load(built.BModel);
        EmulatorNet net = rt.Net(piece);
        var rng = new Random(7);
        var inputs = new Dictionary<string, float[]>();
        for (int i = 0; i < net.Inputs.Count; i++)
        {
            NetTensor t = net.Inputs[i];
            var values = new float[t.Count];
            switch (t.Name)
            {
                case "position_ids":
                    for (int k = 0; k < values.Length; k++) values[k] = piece.StartsWith("block_cache", StringComparison.Ordinal) ? 17 : k;
                    break;
                case "attention_mask":
                {
                    long keys = t.Shape[^1], rows = t.Shape[^2];
                    for (long r = 0; r < rows; r++)
                        for (long j = 0; j < keys; j++)
                            values[r * keys + j] = rows == 1 ? (j < 17 || j == keys - 1 ? 0 : NetContract.MaskFill) : (j <= r ? 0 : NetContract.MaskFill);
                    break;
                }
                default:
                    for (int k = 0; k < values.Length; k++) values[k] = FloatFormats.BFloat16ToFloatScalar(FloatFormats.FloatToBFloat16Scalar((float)(rng.NextDouble() * 2 - 1)));
                    break;
            }
            if (t.DType == BModelDataType.Int32) rt.Memory.Write(net.InputMems[i], (ReadOnlySpan<int>)values.Select(v => (int)v).ToArray());
            else rt.WriteFloat(net.InputMems[i], t.DType, values);
            inputs[t.Name] = values;
        }
        rt.Launch(net);
        using var weights = new NpzWeightSource(Path.Combine(built.Dir, piece + "_top_weights.npz"));
        var expected = new GraphInterpreter(graph, weights).Run(inputs);
        for (int o = 0; o < net.Outputs.Count; o++)
        {
            NetTensor t = net.Outputs[o];
            float[] actual = rt.ReadFloat(net.OutputMems[o], t.DType, t.Count);
            float[] want = expected[t.Name];
            if (t.DType == BModelDataType.Int32)
            {
                CollectionAssert.AreEqual(want, actual, t.Name);
                continue;
            }
            double cos = VerifyCosine(actual, want);
            Assert.IsTrue(cos > 0.99999, $"{piece} {t.Name}: cosine {cos}");
        }
        if (piece == "lm_head")
        {
            float[] logits = rt.ReadProbe(net, "logits");
            Assert.AreEqual(expected["token_id"][0], LlmEmulator.ArgMax(logits), "the probed logits are the ones the TopK chose from");
        }
    }

    private static double VerifyCosine(float[] a, float[] b) => LlmBuild.Core.Stages.VerifyStage.Cosine(a, b);

    /// <summary>The w4 build's top-1 agrees with the f32 reference over 64 teacher-forced positions of natural continuation.</summary>
    [TestMethod]
    public void W4Top1AgreementOver64TeacherForcedPositions()
    {
        var built = ExampleBuild.Get("w4bf16", groupSize: 64);
        int vocab = built.Model.Config.VocabSize;
        using ICheckpoint checkpoint = CheckpointLoader.Open(built.Model.Options.ModelPath);
        var reference = new ReferenceModel(checkpoint, built.Model.Config);
        // The sequence: the goldens' prompt, then the reference's own greedy continuation, 64 tokens in all.
        var ids = new List<int>(Goldens.PromptIds);
        float[] logits = reference.Forward(Goldens.PromptIds);
        float[] last = logits.AsSpan((ids.Count - 1) * vocab, vocab).ToArray();
        while (ids.Count < 64)
        {
            ids.Add(LlmEmulator.ArgMax(last));
            last = reference.Forward([ids[^1]]);
        }
        reference.Reset();
        float[] expected = reference.Forward(ids.ToArray());
        using var emu = LlmEmulator.Load(built.BModel);
        float[] actual = emu.TeacherForced(ids.ToArray(), allPositions: true);
        int agree = 0;
        for (int p = 0; p < 64; p++)
            if (LlmEmulator.ArgMax(actual.AsSpan(p * vocab, vocab)) == LlmEmulator.ArgMax(expected.AsSpan(p * vocab, vocab))) agree++;
        Console.WriteLine($"w4bf16 g64 top-1 agreement: {agree}/64");
        Assert.IsTrue(agree >= 58, $"top-1 agreement {agree}/64 < 90 %");
    }
}
