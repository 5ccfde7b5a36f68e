using LlmBuild.Core.Stages;

namespace LlmBuild.Core.Tests.Codegen;

[TestClass]
public sealed class BackendSelectionTests
{
    [TestMethod]
    public void TpuMlirWhenTpuMlirPathIsSetOrModelDeployIsOnPath()
    {
        string empty = Directory.CreateTempSubdirectory("llmbuild-path-").FullName;
        string tool = Directory.CreateTempSubdirectory("llmbuild-path-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(tool, "model_deploy.py"), "");
            string sep = Path.PathSeparator.ToString();
            Assert.AreEqual("builtin", ResolveStage.DefaultBackend(null, empty));
            Assert.AreEqual("builtin", ResolveStage.DefaultBackend("  ", null));
            Assert.AreEqual("tpu-mlir", ResolveStage.DefaultBackend("/opt/tpu-mlir", empty));
            Assert.AreEqual("tpu-mlir", ResolveStage.DefaultBackend(null, empty + sep + tool));
            // An explicit LlmCodegenBackend wins over detection.
            var props = new Dictionary<string, string?>
            {
                ["ModelPath"] = ExampleBuild.ModelDir, ["SeqLength"] = "64", ["LlmCodegenBackend"] = "builtin", ["TpuMlirPath"] = tool,
            };
            Assert.AreEqual("builtin", ExampleBuild.Resolve(props).CodegenBackend);
            props.Remove("LlmCodegenBackend");
            Assert.AreEqual("tpu-mlir", ExampleBuild.Resolve(props).CodegenBackend);
        }
        finally
        {
            Directory.Delete(empty, true);
            Directory.Delete(tool, true);
        }
    }
}
