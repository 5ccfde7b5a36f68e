using LlmBuild.Core.BModel;
using LlmBuild.Core.Models;
using LlmBuild.Core.Stages;

namespace LlmBuild.Core.Tests.Codegen;

[TestClass]
public sealed class CompileStageTests
{
    [TestMethod]
    public void ExamplePiecesCompileToEmulatorBModels()
    {
        var built = ExampleBuild.Get("w4bf16");
        foreach (var (name, path) in built.PieceBModels)
        {
            using var c = BModelReader.Read(path);
            Assert.AreEqual("BM1684X-EMU", c.Model.Chip);
            Assert.AreEqual(CompileStage.FixedTime, c.Model.Time);
            var net = c.Model.Nets.Single();
            Assert.AreEqual(name, net.Name);
            var stage = net.Stages.Single();
            var program = EmuProgram.Decode(c.GetSpan(stage.CmdGroups[0].BinaryBdc!.Value), name);
            Assert.IsTrue(program.Instructions.Count > 0, name);
            Assert.AreEqual(stage.CtxSize, c.Model.NeuronSize);
            c.VerifyCheckCodes();
        }
    }
}
