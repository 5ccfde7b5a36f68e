using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using LlmBuild.Tests;

namespace LlmBuild.Core.Tests.Checkpoints;

/// <summary>Test helpers: temporary folders, a safetensors writer written from the format description, python3 + numpy.</summary>
internal static class TestFiles
{
    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmbuild-weights-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LlmBuild.sln")) || Directory.Exists(Path.Combine(d.FullName, "examples", "tiny-qwen2"))) return d.FullName;
        throw new InvalidOperationException("Repository root not found.");
    }

    public sealed record Tensor(string Name, string DType, long[] Shape, byte[] Data);

    /// <summary>Writes a safetensors file: u64 header length, JSON header (padded with spaces to 8 bytes), data.</summary>
    public static void WriteSafetensors(string path, IEnumerable<Tensor> tensors, Func<string, string>? patchHeader = null)
    {
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        var data = new MemoryStream();
        foreach (var t in tensors)
        {
            header[t.Name] = new { dtype = t.DType, shape = t.Shape, data_offsets = new[] { data.Length, data.Length + t.Data.Length } };
            data.Write(t.Data);
        }
        string json = JsonSerializer.Serialize(header);
        if (patchHeader is not null) json = patchHeader(json);
        while ((json.Length + 8) % 8 != 0) json += " ";
        byte[] h = Encoding.UTF8.GetBytes(json);
        using var f = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)h.Length);
        f.Write(len);
        f.Write(h);
        f.Write(data.ToArray());
    }

    public static byte[] Bytes(float[] v) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()).ToArray();
    public static byte[] Bytes(ushort[] v) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()).ToArray();
    public static byte[] Bytes(int[] v) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan()).ToArray();

    public static float[] RandomFloats(int n, int seed, float scale = 1f)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();
    }

    /// <summary>Runs python3 with numpy on a script; fails, saying how to get them, when python3 or numpy is absent.</summary>
    public static string RunPython(string script)
    {
        var psi = new ProcessStartInfo(ExternalDecoders.Python3WithNumpy(), ["-c", script]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.AreEqual(0, p.ExitCode, $"python3 failed:\n{stderr}\n{stdout}");
        return stdout;
    }
}
