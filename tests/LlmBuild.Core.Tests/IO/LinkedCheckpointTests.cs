using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Tests.IO;

/// <summary>Checkpoints laid out like Hugging Face's cache: every file a symlink into a blob store.</summary>
[TestClass]
public sealed class LinkedCheckpointTests
{
    [TestMethod]
    public void SymlinkedSafetensorsAreReadThroughTheLink()
    {
        string root = Path.Combine(Path.GetTempPath(), "llmbuild-links", Guid.NewGuid().ToString("N"));
        string blobs = Path.Combine(root, "blobs"), snapshot = Path.Combine(root, "snapshot");
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        string example = Path.Combine(Graph.TestResolver.RepoRoot, "examples", "tiny-qwen2", "checkpoint");
        foreach (string f in Directory.GetFiles(example))
        {
            string blob = Path.Combine(blobs, Guid.NewGuid().ToString("N"));
            File.Copy(f, blob);
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(f)), blob);
        }
        string weights = Path.Combine(snapshot, "model.safetensors");
        Assert.AreEqual(new FileInfo(Path.Combine(example, "model.safetensors")).Length, LinkedFile.Resolve(weights).Length);
        using ICheckpoint linked = CheckpointLoader.Open(snapshot), direct = CheckpointLoader.Open(example);
        CollectionAssert.AreEqual(direct.TensorNames.ToList(), linked.TensorNames.ToList());
        var a = new float[64];
        var b = new float[64];
        linked.ReadFloat32("model.norm.weight", a);
        direct.ReadFloat32("model.norm.weight", b);
        CollectionAssert.AreEqual(b, a);
    }
}
