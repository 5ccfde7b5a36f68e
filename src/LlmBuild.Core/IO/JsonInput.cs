using System.Globalization;
using System.Text.Json;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>
/// Reads text and JSON files a user hands LlmBuild (tokenizer files, generation_config.json, messages files), with
/// coded errors: a missing file, a folder where a file was expected, unreadable bytes, invalid JSON.
/// </summary>
public static class JsonInput
{
    /// <summary>Reads a whole text file; every failure is <see cref="ErrorCodes.ReadFailed"/> naming the file.</summary>
    /// <param name="what">What the file is for, for the message (e.g. "--messages").</param>
    public static string ReadText(string path, string what)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full))
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"{what}: '{full}' is a folder; give the path of a file.", full);
        if (!File.Exists(full))
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"{what}: '{full}' does not exist.", full);
        try
        {
            return File.ReadAllText(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"{what}: cannot read '{full}': {e.Message.TrimEnd('.')}. Check that it is a readable file.", full, e);
        }
    }

    /// <summary>
    /// Parses a JSON file. Invalid JSON is <paramref name="code"/>; <paramref name="fix"/> ends every message about
    /// the file's content (how to repair or regenerate it).
    /// </summary>
    public static JsonField Read(string path, string code, string fix)
    {
        string text = ReadText(path, Path.GetFileName(path));
        return Parse(text, Path.GetFullPath(path), code, fix);
    }

    /// <summary>Like <see cref="Read"/>, or null when the file does not exist.</summary>
    public static JsonField? ReadOptional(string path, string code, string fix) =>
        File.Exists(path) || Directory.Exists(path) ? Read(path, code, fix) : null;

    /// <summary>Parses JSON text that came from <paramref name="file"/>.</summary>
    public static JsonField Parse(string text, string file, string code, string fix)
    {
        try
        {
            using var doc = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = true });
            return new JsonField(doc.RootElement.Clone(), file, "", code, fix);
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(code, $"{file}: not valid JSON ({e.Message.TrimEnd('.')}). {fix}", file, e);
        }
    }
}

/// <summary>
/// One value of a JSON document with where it is (the file and the path inside it, such as <c>model.vocab["a"]</c>)
/// and the code its errors carry. Every typed read checks the value's kind and range, so a malformed file is one
/// coded error naming the field, what it must be and what it is, never a raw exception. A field that is absent
/// reads as missing (<see cref="Exists"/> false): optional reads give null, required reads fail.
/// </summary>
public readonly struct JsonField
{
    private readonly JsonElement _element;

    internal JsonField(JsonElement element, string file, string path, string code, string fix)
        : this(file, path, code, fix, exists: true) => _element = element;

    private JsonField(string file, string path, string code, string fix, bool exists)
    {
        _element = default;
        File = file;
        Path = path;
        Code = code;
        Fix = fix;
        Exists = exists;
    }

    /// <summary>The absent field at <paramref name="path"/>.</summary>
    private JsonField Missing(string path) => new(File, path, Code, Fix, exists: false);

    public string File { get; }
    /// <summary>The value's place in the document ("" for the root).</summary>
    public string Path { get; }
    public string Code { get; }
    private string Fix { get; }
    public bool Exists { get; }

    public JsonValueKind Kind => Exists ? _element.ValueKind : JsonValueKind.Undefined;
    public bool IsObject => Kind == JsonValueKind.Object;
    public bool IsArray => Kind == JsonValueKind.Array;
    public bool IsString => Kind == JsonValueKind.String;
    /// <summary>Absent or JSON null: both mean "not given" for optional fields.</summary>
    public bool IsMissingOrNull => Kind is JsonValueKind.Undefined or JsonValueKind.Null;

    private string Where => Path.Length == 0 ? "the document" : Path;

    /// <summary>The named member of an object; missing when absent or when this is not an object.</summary>
    public JsonField this[string name] =>
        IsObject && _element.TryGetProperty(name, out var v)
            ? new JsonField(v, File, Child(name), Code, Fix)
            : Missing(Child(name));

    private string Child(string name) =>
        IsIdentifier(name) ? (Path.Length == 0 ? name : $"{Path}.{name}") : $"{Path}[{Quote(name)}]";

    // Names appear in messages as written: no \u escapes for non-ASCII tokens or '<'.
    private static readonly JsonSerializerOptions QuoteOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static string Quote(string name) => JsonSerializer.Serialize(name, QuoteOptions);

    private static bool IsIdentifier(string name) =>
        name.Length > 0 && !char.IsAsciiDigit(name[0]) && name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_');

    /// <summary>A coded error about this value: "file: path problem. fix".</summary>
    public LlmBuildException Error(string problem) => new(Code, $"{File}: {Where} {problem}. {Fix}", File);

    private LlmBuildException WrongKind(string expected) =>
        Exists ? Error($"must be {expected}, found {Describe()}") : Error($"is missing; it must be {expected}");

    /// <summary>The value for a message: its kind and, for scalars, a short rendering.</summary>
    public string Describe()
    {
        if (!Exists) return "nothing";
        string raw = _element.GetRawText();
        if (raw.Length > 40) raw = raw[..37] + "...";
        return _element.ValueKind switch
        {
            JsonValueKind.Object => "an object",
            JsonValueKind.Array => "a list",
            JsonValueKind.String => $"the string {raw}",
            JsonValueKind.Number => $"the number {raw}",
            JsonValueKind.True or JsonValueKind.False => raw,
            JsonValueKind.Null => "null",
            _ => raw,
        };
    }

    /// <summary>This value, which must be an object.</summary>
    public JsonField RequireObject() => IsObject ? this : throw WrongKind("an object");

    /// <summary>The members of an object, in file order.</summary>
    public IEnumerable<(string Name, JsonField Value)> Members()
    {
        var self = RequireObject();
        // Enumerated names are data (tokens, ids), so they are always quoted: vocab["a"], not vocab.a.
        return self._element.EnumerateObject().Select(p =>
            (p.Name, new JsonField(p.Value, self.File, $"{self.Path}[{Quote(p.Name)}]", self.Code, self.Fix)));
    }

    /// <summary>The items of a list.</summary>
    public IEnumerable<JsonField> Items()
    {
        if (!IsArray) throw WrongKind("a list");
        var self = this;
        return _element.EnumerateArray().Select((v, i) => new JsonField(v, self.File, $"{self.Path}[{i}]", self.Code, self.Fix));
    }

    public int Count => IsArray ? _element.GetArrayLength() : throw WrongKind("a list");

    public JsonField this[int index] =>
        IsArray && index >= 0 && index < _element.GetArrayLength()
            ? new JsonField(_element[index], File, $"{Path}[{index}]", Code, Fix)
            : Missing($"{Path}[{index}]");

    public string String() => IsString ? _element.GetString()! : throw WrongKind("a string");

    /// <summary>A string, or null when absent or null.</summary>
    public string? StringOrNull() => IsMissingOrNull ? null : String();

    /// <summary>A string of exactly one UTF-16 character (a replacement or strip character).</summary>
    public char Char()
    {
        string s = String();
        return s.Length == 1 ? s[0] : throw Error($"must be a string of one character, found {Describe()}");
    }

    public bool Bool() => Kind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw WrongKind("true or false"),
    };

    public bool? BoolOrNull() => IsMissingOrNull ? null : Bool();

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public long Long(long min = long.MinValue, long max = long.MaxValue)
    {
        string range = RangeText(min, max);
        if (Kind != JsonValueKind.Number || !_element.TryGetInt64(out long value))
            throw WrongKind("an integer" + range);
        return value >= min && value <= max ? value : throw Error($"must be an integer{range}, found {Describe()}");
    }

    public int Int(int min = int.MinValue, int max = int.MaxValue) => (int)Long(min, max);

    public int? IntOrNull(int min = int.MinValue, int max = int.MaxValue) => IsMissingOrNull ? null : Int(min, max);

    /// <summary>A finite number in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public double Double(double min = double.MinValue, double max = double.MaxValue)
    {
        string range = RangeText(min, max);
        if (Kind != JsonValueKind.Number || !_element.TryGetDouble(out double value) || !double.IsFinite(value))
            throw WrongKind("a number" + range);
        return value >= min && value <= max ? value : throw Error($"must be a number{range}, found {Describe()}");
    }

    public double? DoubleOrNull(double min = double.MinValue, double max = double.MaxValue) => IsMissingOrNull ? null : Double(min, max);

    private static string RangeText(double min, double max)
    {
        bool hasMin = min > double.MinValue && min > long.MinValue, hasMax = max < double.MaxValue && max < long.MaxValue;
        string F(double v) => v.ToString(CultureInfo.InvariantCulture);
        return (hasMin, hasMax) switch
        {
            (true, true) => $" from {F(min)} to {F(max)}",
            (true, false) => $" of at least {F(min)}",
            (false, true) => $" of at most {F(max)}",
            _ => "",
        };
    }
}
