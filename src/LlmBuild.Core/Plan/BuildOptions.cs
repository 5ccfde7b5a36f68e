using System.Globalization;
using LlmBuild.Core.Chips;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Plan;

/// <summary>
/// The user's options: one property per llm_convert.py flag, same defaults and checks. Each is declared in
/// <see cref="OptionTable"/> (name, flags, default, values, check); <see cref="Parse"/> reads MSBuild's strings through
/// it and <see cref="Validate"/> applies its checks, so options set in code are checked the same way.
/// </summary>
public sealed record BuildOptions
{
    public static IReadOnlyList<string> QuantizeModes => OptionTable.Quantize.Choices;
    public static IReadOnlyList<string> Chips => OptionTable.Chip.Choices;
    public static IReadOnlyList<string> DistributeStrategies => OptionTable.DistributeStrategy.Choices;

    public required string ModelPath { get; init; }
    public required int SeqLength { get; init; }
    public string Quantize { get; init; } = OptionTable.Quantize.Default;
    public int QGroupSize { get; init; } = DefaultInteger(OptionTable.QGroupSize);
    public bool Symmetric { get; init; }
    public string Chip { get; init; } = OptionTable.Chip.Default;
    public int NumDevice { get; init; } = DefaultInteger(OptionTable.NumDevice);
    public string DistributeStrategy { get; init; } = OptionTable.DistributeStrategy.Default;
    public int NumCore { get; init; }
    public int Batch { get; init; } = DefaultInteger(OptionTable.Batch);
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
    /// Parses named string values (MSBuild properties or CLI flags). Names that are not options are ignored;
    /// missing names take the default. Every bad value is an <see cref="ErrorCodes.InvalidProperty"/> error.
    /// </summary>
    public static BuildOptions Parse(IReadOnlyDictionary<string, string?> values)
    {
        var options = new BuildOptions
        {
            ModelPath = OptionTable.ModelPath.ReadText(values),
            SeqLength = OptionTable.SeqLength.ReadInteger(values),
            Quantize = OptionTable.Quantize.ReadText(values),
            QGroupSize = OptionTable.QGroupSize.ReadInteger(values),
            Symmetric = OptionTable.Symmetric.ReadSwitch(values),
            Chip = OptionTable.Chip.ReadText(values),
            NumDevice = OptionTable.NumDevice.ReadInteger(values),
            DistributeStrategy = OptionTable.DistributeStrategy.ReadText(values),
            NumCore = OptionTable.NumCore.ReadInteger(values),
            Batch = OptionTable.Batch.ReadInteger(values),
            MaxInputLength = OptionTable.MaxInputLength.ReadInteger(values),
            MaxPrefillKvLength = OptionTable.MaxPrefillKvLength.ReadInteger(values),
            UseBlockWithKv = OptionTable.UseBlockWithKv.ReadSwitch(values),
            SharePrompt = OptionTable.SharePrompt.ReadSwitch(values),
            MaxPixels = OptionTable.MaxPixels.ReadText(values),
            LoraMaxRank = OptionTable.LoraMaxRank.ReadInteger(values),
            DoSample = OptionTable.DoSample.ReadSwitch(values),
            EmbeddingDisk = OptionTable.EmbeddingDisk.ReadSwitch(values),
            Dynamic = OptionTable.Dynamic.ReadSwitch(values),
            OnlyMlir = OptionTable.OnlyMlir.ReadSwitch(values),
            Debug = OptionTable.Debug.ReadSwitch(values),
            DryRun = OptionTable.DryRun.ReadSwitch(values),
        };
        options.Validate();
        return options;
    }

    /// <summary>Each option's own check (range, choices, format), then the cross-option checks llm_convert.py makes, plus ours.</summary>
    public void Validate()
    {
        foreach (var option in OptionTable.BuildOptionsFields) option.CheckValue(option.Value!(this));
        if (MaxInputLength > SeqLength)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"MaxInputLength ({MaxInputLength}) is larger than SeqLength ({SeqLength}). Use 0 (= SeqLength) or a value ≤ SeqLength.");
        if (SharePrompt && MaxPrefillKvLength == 0)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                "SharePrompt=true needs MaxPrefillKvLength > 0: the length of the shared prompt whose KV cache later prefills reuse.");
        if (MaxPrefillKvLength >= SeqLength)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"MaxPrefillKvLength ({MaxPrefillKvLength}) must be smaller than SeqLength ({SeqLength}).");
        ChipProfile chip = ChipProfile.Get(Chip);
        if (chip.SingleDevice && NumDevice > 1)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties, $"{Chip} boards have one chip: NumDevice must be 1.");
        if (NumCore > chip.MaxCores)
            throw new LlmBuildException(ErrorCodes.ConflictingProperties,
                $"NumCore={NumCore} but {Chip} has {chip.MaxCores} core{(chip.MaxCores > 1 ? "s" : "")}. Use 0 (all cores) or 1..{chip.MaxCores}.");
    }

    /// <summary>Prefill length L: MaxInputLength, or SeqLength when 0.</summary>
    public int PrefillLength => MaxInputLength > 0 ? MaxInputLength : SeqLength;

    /// <summary>Cores the program uses: NumCore, or every core of the chip when 0.</summary>
    public int EffectiveNumCore => NumCore > 0 ? NumCore : ChipProfile.Get(Chip).MaxCores;

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

    private static int DefaultInteger(OptionDefinition option) => int.Parse(option.Default, CultureInfo.InvariantCulture);

    private static LlmBuildException Invalid(string name, string value, string expected) =>
        new(ErrorCodes.InvalidProperty, $"Property {name}='{value}' is invalid: expected {expected}.");
}
