using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;

namespace LlmBuild.Core.Tests.Reference;

/// <summary>Hugging Face's f32 goldens for the example model (tests/fixtures/goldens/fortunes-open.*).</summary>
internal static class Goldens
{
    private static readonly Lazy<(int[] Prompt, int[] Generated, float[] Logits, float[] GenLogits)> Data = new(Load);

    public static int[] PromptIds => Data.Value.Prompt;
    public static int[] GeneratedIds => Data.Value.Generated;
    /// <summary>Prefill logits, [prompt length, vocab].</summary>
    public static float[] PromptLogits => Data.Value.Logits;
    /// <summary>Logits that chose each generated token, [32, vocab] (row 0 = last prompt position).</summary>
    public static float[] GeneratedLogits => Data.Value.GenLogits;

    private static (int[], int[], float[], float[]) Load()
    {
        string dir = Graph.TestResolver.Fixture("goldens");
        var json = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "fortunes-open.json")))!;
        int[] prompt = ((JsonArray)json["prompt_ids"]!).Select(n => (int)n!).ToArray();
        int[] generated = ((JsonArray)json["generated_ids"]!).Select(n => (int)n!).ToArray();
        return (prompt, generated, ReadNpyF32(Path.Combine(dir, "fortunes-open.logits.npy")), ReadNpyF32(Path.Combine(dir, "fortunes-open.gen_logits.npy")));
    }

    /// <summary>Minimal .npy reader for little-endian f32, C order (what the goldens are).</summary>
    public static float[] ReadNpyF32(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int headerLength = bytes[6] == 1 ? BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8)) : (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
        int start = bytes[6] == 1 ? 10 + headerLength : 12 + headerLength;
        string header = Encoding.ASCII.GetString(bytes, bytes[6] == 1 ? 10 : 12, headerLength);
        if (!header.Contains("'<f4'") || header.Contains("'fortran_order': True")) throw new NotSupportedException(header);
        var data = new float[(bytes.Length - start) / 4];
        for (int i = 0; i < data.Length; i++) data[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(start + 4 * i));
        return data;
    }
}
