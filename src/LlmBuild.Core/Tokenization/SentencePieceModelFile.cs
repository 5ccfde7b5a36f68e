using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Tokenization;

/// <summary>
/// A SentencePiece model file (tokenizer.model: the ModelProto protobuf) read without the sentencepiece library and
/// stated as the tokenizer.json transformers' SpmConverter writes for a BPE model, so the one tokenizer.json reader
/// serves it: every piece in the vocabulary; merges from every split of a normal piece into two normal pieces, ordered
/// by the merged piece's score (highest first), then by the left and right pieces' ids; byte fallback as the trainer
/// spec says; a normalizer that prepends ▁ (add_dummy_prefix) and turns spaces into ▁; unknown and control pieces as
/// special added tokens, user-defined ones as plain added tokens. Unigram models, precompiled normalization rules and
/// whitespace squeezing are refused (LLMB0603): their encoding is another algorithm.
/// </summary>
internal static class SentencePieceModelFile
{
    internal enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    internal sealed record Piece(string Text, float Score, PieceType Type);

    internal sealed record Model(IReadOnlyList<Piece> Pieces, int ModelType, bool ByteFallback, string NormalizerName,
        bool HasPrecompiledRules, bool AddDummyPrefix, bool RemoveExtraWhitespaces, bool EscapeWhitespaces);

    private const string Fix = "The file is not a SentencePiece model or is damaged; get tokenizer.model (or a tokenizer.json) from the model's release again.";

    public static Model Read(string path)
    {
        byte[] data = File.ReadAllBytes(path);
        var pieces = new List<Piece>();
        int modelType = 1; // UNIGRAM is the protobuf default
        bool byteFallback = false, addDummyPrefix = true, removeExtraWhitespaces = true, escapeWhitespaces = true, precompiled = false;
        string normalizer = "nmt_nfkc";
        foreach (var (field, value) in Fields(data, path))
        {
            switch (field)
            {
                case 1: pieces.Add(ReadPiece(value.Bytes, path, pieces.Count)); break;
                case 2:
                    foreach (var (f, v) in Fields(value.Bytes, path))
                    {
                        if (f == 3) modelType = (int)v.Number;
                        else if (f == 35) byteFallback = v.Number != 0;
                    }
                    break;
                case 3:
                    foreach (var (f, v) in Fields(value.Bytes, path))
                    {
                        if (f == 1) normalizer = Encoding.UTF8.GetString(v.Bytes);
                        else if (f == 2) precompiled = v.Bytes.Length > 0;
                        else if (f == 3) addDummyPrefix = v.Number != 0;
                        else if (f == 4) removeExtraWhitespaces = v.Number != 0;
                        else if (f == 5) escapeWhitespaces = v.Number != 0;
                    }
                    break;
            }
        }
        if (pieces.Count == 0) throw Bad(path, "it holds no pieces");
        return new Model(pieces, modelType, byteFallback, normalizer, precompiled, addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces);
    }

    /// <summary>The tokenizer.json of <paramref name="model"/>, plus <paramref name="appended"/> special tokens at the ids after its pieces.</summary>
    public static string ToTokenizerJson(Model model, IReadOnlyList<string> appended, string path)
    {
        if (model.ModelType != 2)
            throw Unsupported(path, $"model type {model.ModelType} ({(model.ModelType == 1 ? "unigram" : "not BPE")}); LlmBuild encodes SentencePiece BPE models");
        if (model.HasPrecompiledRules || model.NormalizerName is not ("identity" or ""))
            throw Unsupported(path, $"normalization rule '{model.NormalizerName}' (a precompiled character map)");
        if (model.RemoveExtraWhitespaces) throw Unsupported(path, "remove_extra_whitespaces (squeezing runs of spaces)");
        if (!model.EscapeWhitespaces) throw Unsupported(path, "escape_whitespaces = false");

        var pieces = model.Pieces;
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < pieces.Count; i++) ids.TryAdd(pieces[i].Text, i);
        bool IsNormal(string text, out int id) => ids.TryGetValue(text, out id) && pieces[id].Type == PieceType.Normal;
        var merges = new List<(int Left, int Right, float Score)>();
        for (int i = 0; i < pieces.Count; i++)
        {
            if (pieces[i].Type != PieceType.Normal) continue;
            string text = pieces[i].Text;
            for (int cut = 1; cut < text.Length; cut++)
            {
                if (char.IsLowSurrogate(text[cut])) continue;
                if (IsNormal(text[..cut], out int left) && IsNormal(text[cut..], out int right)) merges.Add((left, right, pieces[i].Score));
            }
        }
        merges.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left != b.Left ? a.Left.CompareTo(b.Left) : a.Right.CompareTo(b.Right));

        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartArray("added_tokens");
            for (int i = 0; i < pieces.Count; i++)
                if (pieces[i].Type is PieceType.Unknown or PieceType.Control or PieceType.UserDefined)
                    WriteAdded(w, i, pieces[i].Text, special: pieces[i].Type != PieceType.UserDefined);
            for (int i = 0; i < appended.Count; i++) WriteAdded(w, pieces.Count + i, appended[i], special: true);
            w.WriteEndArray();
            w.WriteStartObject("normalizer");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("normalizers");
            if (model.AddDummyPrefix) { w.WriteStartObject(); w.WriteString("type", "Prepend"); w.WriteString("prepend", "▁"); w.WriteEndObject(); }
            w.WriteStartObject(); w.WriteString("type", "Replace"); w.WriteStartObject("pattern"); w.WriteString("String", " "); w.WriteEndObject();
            w.WriteString("content", "▁"); w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteNull("pre_tokenizer");
            w.WriteNull("post_processor");
            w.WriteStartObject("decoder");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("decoders");
            w.WriteStartObject(); w.WriteString("type", "Replace"); w.WriteStartObject("pattern"); w.WriteString("String", "▁"); w.WriteEndObject();
            w.WriteString("content", " "); w.WriteEndObject();
            if (model.ByteFallback) { w.WriteStartObject(); w.WriteString("type", "ByteFallback"); w.WriteEndObject(); }
            w.WriteStartObject(); w.WriteString("type", "Fuse"); w.WriteEndObject();
            if (model.AddDummyPrefix)
            {
                w.WriteStartObject(); w.WriteString("type", "Strip"); w.WriteString("content", " ");
                w.WriteNumber("start", 1); w.WriteNumber("stop", 0); w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            int unk = pieces.ToList().FindIndex(p => p.Type == PieceType.Unknown);
            if (unk >= 0) w.WriteString("unk_token", pieces[unk].Text);
            w.WriteBoolean("fuse_unk", true);
            w.WriteBoolean("byte_fallback", model.ByteFallback);
            w.WriteStartObject("vocab");
            var written = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < pieces.Count; i++)
                if (written.Add(pieces[i].Text)) w.WriteNumber(pieces[i].Text, i);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (left, right, _) in merges)
            {
                w.WriteStartArray();
                w.WriteStringValue(pieces[left].Text);
                w.WriteStringValue(pieces[right].Text);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void WriteAdded(Utf8JsonWriter w, int id, string content, bool special)
    {
        w.WriteStartObject();
        w.WriteNumber("id", id);
        w.WriteString("content", content);
        w.WriteBoolean("special", special);
        w.WriteBoolean("normalized", !special);
        w.WriteEndObject();
    }

    private static Piece ReadPiece(byte[] message, string path, int index)
    {
        string? text = null;
        float score = 0;
        var type = PieceType.Normal;
        foreach (var (f, v) in Fields(message, path))
        {
            if (f == 1) text = Encoding.UTF8.GetString(v.Bytes);
            else if (f == 2) score = v.Fixed32;
            else if (f == 3) type = v.Number is >= 1 and <= 6 ? (PieceType)v.Number : throw Bad(path, $"piece {index} has type {v.Number}");
        }
        return new Piece(text ?? throw Bad(path, $"piece {index} has no text"), score, type);
    }

    private readonly record struct Value(ulong Number, byte[] Bytes, float Fixed32);

    /// <summary>The fields of one protobuf message: varints, 32-bit values and length-delimited bytes (64-bit ones skipped).</summary>
    private static IEnumerable<(int Field, Value Value)> Fields(byte[] data, string path)
    {
        int at = 0;
        while (at < data.Length)
        {
            ulong key = Varint(data, ref at, path);
            int field = (int)(key >> 3);
            switch (key & 7)
            {
                case 0: yield return (field, new Value(Varint(data, ref at, path), [], 0)); break;
                case 1: Need(data, at, 8, path); at += 8; break;
                case 2:
                {
                    ulong length = Varint(data, ref at, path);
                    if (length > (ulong)(data.Length - at)) throw Bad(path, $"field {field} at byte {at} runs past the end");
                    yield return (field, new Value(0, data.AsSpan(at, (int)length).ToArray(), 0));
                    at += (int)length;
                    break;
                }
                case 5:
                    Need(data, at, 4, path);
                    yield return (field, new Value(0, [], BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(at, 4))));
                    at += 4;
                    break;
                default: throw Bad(path, $"wire type {key & 7} at byte {at}");
            }
        }
    }

    private static void Need(byte[] data, int at, int count, string path)
    {
        if (data.Length - at < count) throw Bad(path, $"a value at byte {at} runs past the end");
    }

    private static ulong Varint(byte[] data, ref int at, string path)
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (at >= data.Length) throw Bad(path, "a number runs past the end");
            byte b = data[at++];
            result |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return result;
        }
        throw Bad(path, $"a number at byte {at} is longer than 10 bytes");
    }

    private static LlmBuildException Bad(string path, string what) =>
        new(ErrorCodes.BadTokenizerFile, $"{path}: {what}. {Fix}", path);

    private static LlmBuildException Unsupported(string path, string what) =>
        new(ErrorCodes.UnsupportedTokenizerFeature,
            $"{path}: the SentencePiece model uses {what}, which LlmBuild does not implement. Provide a tokenizer.json " +
            "(transformers: AutoTokenizer.from_pretrained(dir).save_pretrained(dir) writes one for tokenizers it can convert).", path);
}
