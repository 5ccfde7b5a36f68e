using System.Globalization;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Plan;

/// <summary>
/// The user's options: one property per llm_convert.py flag, same defaults and checks. The SDK's props declare
/// the same names with the same defaults; <see cref="Parse"/> turns MSBuild's strings into checked values.
/// </summary>
public sealed record BuildOptions
{
    public static readonly string[] QuantizeModes = ["auto", "bf16", "f16", "w8bf16", "w8f16", "w4bf16", "w4f16"];
    public static readonly string[] Chips = ["bm1684x", "bm1688", "cv186x"];
    public static readonly string[] DistributeStrategies = ["tp", "pp"];

    public required string ModelPath { get; init; }
    public required int SeqLength { get; init; }
    public string Quantize { get; init; } = "auto";
    public int QGroupSize { get; init; } = 64;
    public bool Symmetric { get; init; }
    public string Chip { get; init; } = "bm1684x";
    public int NumDevice { get; init; } = 1;
    public string DistributeStrategy { get; init; } = "tp";
    public int NumCore { get; init; }
    public int Batch { get; init; } = 1;
    public int MaxInputLength { get; init; }
    public int MaxPrefillKvLength { get; init; }
    public bool UseBlockWithKv { get; init; }
    public bool SharePrompt { get; init; }
    /// <summary>"W,H" for vision families; empty means the family default.</summary>
    public string MaxPixels { get; init; } = "";
    public int LoraMaxRank { get; init; }
    public bool DoSample { get; init; }
    public bool EmbeddingDisk { get; init; }
    public bool Dynamic { get; init; }
    public bool OnlyMlir { get; init; }
    public bool Debug { get; init; }
    public bool DryRun { get; init; }

    /// <summary>
    /// Parses named string values (MSBuild properties or CLI flags). Unknown names are a programming error;
    /// missing names take the default. Every bad value is an <see cref="ErrorCodes.InvalidProperty"/> error.
    /// </summary>
    public static BuildOptions Parse(IReadOnlyDictionary<string, string?> values)
    {
        string? Get(string name) => values.TryGetValue(name, out string? v) && !string.IsNullOrWhiteSpace(v) ? v.Trim() : null;

        string modelPath = Get(nameof(ModelPath))
            ?? throw Invalid(nameof(ModelPath), "", "the path of a Hugging Face checkpoint folder (it is required)");
        var options = new BuildOptions
        {
            ModelPath = modelPath,
            SeqLength = Int(nameof(SeqLength), Get(nameof(SeqLength)) ?? throw Invalid(nameof(SeqLength), "", "a positive integer (it is required)"), 1),
            Quantize = Choice(nameof(Quantize), Get(nameof(Quantize)) ?? "auto", QuantizeModes),
            QGroupSize = Int(nameof(QGroupSize), Get(nameof(QGroupSize)) ?? "64", -1),
            Symmetric = Bool(nameof(Symmetric), Get(nameof(Symmetric))),
            Chip = Choice(nameof(Chip), Get(nameof(Chip)) ?? "bm1684x", Chips),
            NumDevice = Int(nameof(NumDevice), Get(nameof(NumDevice)) ?? "1", 1),
            DistributeStrategy = Choice(nameof(DistributeStrategy), Get(nameof(DistributeStrategy)) ?? "tp", DistributeStrategies),
            NumCore = Int(nameof(NumCore), Get(nameof(NumCore)) ?? "0", 0),
            Batch = Int(nameof(Batch), Get(nameof(Batch)) ?? "1", 1),
            MaxInputLength = Int(nameof(MaxInputLength), Get(nameof(MaxInputLength)) ?? "0", 0),
            MaxPrefillKvLength = Int(nameof(MaxPrefillKvLength), Get(nameof(MaxPrefillKvLength)) ?? "0", 0),
            UseBlockWithKv = Bool(nameof(UseBlockWithKv), Get(nameof(UseBlockWithKv))),
            SharePrompt = Bool(nameof(SharePrompt), Get(nameof(SharePrompt))),
            MaxPixels = Get(nameof(MaxPixels)) ?? "",
            LoraMaxRank = Int(nameof(LoraMaxRank), Get(nameof(LoraMaxRank)) ?? "0", 0),
            DoSample = Bool(nameof(DoSample), Get(nameof(DoSample))),
            EmbeddingDisk = Bool(nameof(EmbeddingDisk), Get(nameof(EmbeddingDisk))),
            Dynamic = Bool(nameof(Dynamic), Get(nameof(Dynamic))),
            OnlyMlir = Bool(nameof(OnlyMlir), Get(nameof(OnlyMlir))),
            Debug = Bool(nameof(Debug), Get(nameof(Debug))),
            DryRun = Bool(nameof(DryRun), Get(nameof(DryRun))),
        };
        options.Validate();
        return options;
    }

    /// <summary>The cross-option checks llm_convert.py makes, plus ours.</summary>
    public void Validate()
    {
        if (NumDevice < 1)
            throw Invalid(nameof(NumDevice), NumDevice.ToString(CultureInfo.InvariantCulture), "a positive integer (the number of devices the model is split across)");
        if (QGroupSize < 0)
            throw Invalid(nameof(QGroupSize), QGroupSize.ToString(CultureInfo.InvariantCulture), "0 (per-channel) or a positive group size such as 64 or 128");
        if (MaxInputLength > SeqLength)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"MaxInputLength ({MaxInputLength}) is larger than SeqLength ({SeqLength}). Use 0 (= SeqLength) or a value ≤ SeqLength.");
        if (SharePrompt && MaxPrefillKvLength == 0)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                "SharePrompt=true needs MaxPrefillKvLength > 0: the length of the shared prompt whose KV cache later prefills reuse.");
        if (MaxPrefillKvLength >= SeqLength)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"MaxPrefillKvLength ({MaxPrefillKvLength}) must be smaller than SeqLength ({SeqLength}).");
        if (MaxPixels.Length > 0) ParseMaxPixels(MaxPixels);
        if (Chip == "cv186x" && NumDevice > 1)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties, "cv186x boards have one chip: NumDevice must be 1.");
        int maxCores = Chip == "bm1688" ? 2 : 1;
        if (NumCore > maxCores)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"NumCore={NumCore} but {Chip} has {maxCores} core{(maxCores > 1 ? "s" : "")}. Use 0 (all cores) or 1..{maxCores}.");
    }

    /// <summary>Prefill length L: MaxInputLength, or SeqLength when 0.</summary>
    public int PrefillLength => MaxInputLength > 0 ? MaxInputLength : SeqLength;

    /// <summary>Cores the program uses: NumCore, or every core of the chip when 0.</summary>
    public int EffectiveNumCore => NumCore > 0 ? NumCore : Chip == "bm1688" ? 2 : 1;

    /// <summary>Parses "W,H" into two positive integers.</summary>
    public static (int Width, int Height) ParseMaxPixels(string value)
    {
        string[] parts = value.Split(',');
        if (parts.Length == 2
            && int.TryParse(parts[0].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int w) && w > 0
            && int.TryParse(parts[1].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int h) && h > 0)
            return (w, h);
        throw Invalid(nameof(MaxPixels), value, "two positive integers separated by a comma, e.g. 672,896");
    }

    private static int Int(string name, string text, int min)
    {
        if (int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v) && v >= min) return v;
        return min switch
        {
            1 => throw Invalid(name, text, "a positive integer"),
            0 => throw Invalid(name, text, "an integer ≥ 0"),
            _ => throw Invalid(name, text, "an integer"),
        };
    }

    private static bool Bool(string name, string? text) => text?.ToLowerInvariant() switch
    {
        null or "false" or "0" or "no" => false,
        "true" or "1" or "yes" => true,
        _ => throw Invalid(name, text, "true or false"),
    };

    private static string Choice(string name, string text, string[] choices)
    {
        string lower = text.ToLowerInvariant();
        return choices.Contains(lower) ? lower : throw Invalid(name, text, "one of " + string.Join(", ", choices));
    }

    private static LlmBuildException Invalid(string name, string value, string expected) =>
        new(ErrorCodes.InvalidProperty, $"Property {name}='{value}' is invalid: expected {expected}.");
}
