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
    public bool UseHistoryKv { get; init; }
    public int ChunkLength { get; init; }
    public bool SharePrompt { get; init; }
    /// <summary>"W,H" for vision families; empty means the family default.</summary>
    public string MaxPixels { get; init; } = "";
    public int AudioLength { get; init; }
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
    /// <param name="notes">Receives LLMB0020 when UseHistoryKv derives options (see <see cref="WithReferenceRules"/>).</param>
    public static BuildOptions Parse(IReadOnlyDictionary<string, string?> values, ICollection<LlmBuildWarning>? notes = null)
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
            UseHistoryKv = OptionTable.UseHistoryKv.ReadSwitch(values),
            ChunkLength = OptionTable.ChunkLength.ReadInteger(values),
            SharePrompt = OptionTable.SharePrompt.ReadSwitch(values),
            MaxPixels = OptionTable.MaxPixels.ReadText(values),
            AudioLength = OptionTable.AudioLength.ReadInteger(values),
            LoraMaxRank = OptionTable.LoraMaxRank.ReadInteger(values),
            DoSample = OptionTable.DoSample.ReadSwitch(values),
            EmbeddingDisk = OptionTable.EmbeddingDisk.ReadSwitch(values),
            Dynamic = OptionTable.Dynamic.ReadSwitch(values),
            OnlyMlir = OptionTable.OnlyMlir.ReadSwitch(values),
            Debug = OptionTable.Debug.ReadSwitch(values),
            DryRun = OptionTable.DryRun.ReadSwitch(values),
        }.WithReferenceRules(notes);
        options.Validate();
        return options;
    }

    /// <summary>
    /// The options llm_convert.py derives from --use_history_kv: Dynamic is forced on, ChunkLength defaults to
    /// SeqLength/4 (an error when that is 0) and MaxInputLength becomes ChunkLength. The reference refuses any
    /// MaxInputLength given with it. Here, so that projects of the April 2026 command line (--use_block_with_kv with
    /// --max_input_length) keep building, a MaxInputLength without ChunkLength is taken as the chunk, and one equal to
    /// ChunkLength is accepted (a project written from derived options reads back the same); only a MaxInputLength that
    /// contradicts ChunkLength is refused. Idempotent; a note says what was derived when anything changed.
    /// </summary>
    public BuildOptions WithReferenceRules(ICollection<LlmBuildWarning>? notes = null)
    {
        if (!UseHistoryKv) return this;
        int chunk = ChunkLength > 0 ? ChunkLength : MaxInputLength > 0 ? MaxInputLength : SeqLength / 4;
        if (chunk <= 0)
            throw new LlmBuildException(ErrorCodes.BadChunkLength,
                $"UseHistoryKv needs a positive ChunkLength, and SeqLength/4 = {SeqLength / 4}: set ChunkLength (--chunk_length) explicitly or use a larger SeqLength.");
        if (MaxInputLength > 0 && MaxInputLength != chunk)
            throw new LlmBuildException(ErrorCodes.BadChunkLength,
                $"MaxInputLength={MaxInputLength} is set together with UseHistoryKv, which derives it from ChunkLength ({chunk}). Remove MaxInputLength (--max_input_length), or set ChunkLength instead.");
        var derived = this with { Dynamic = true, ChunkLength = chunk, MaxInputLength = chunk };
        if (derived != this)
            notes?.Add(new LlmBuildWarning(ErrorCodes.HistoryKvDerived,
                $"UseHistoryKv: {(ChunkLength > 0 ? "" : MaxInputLength > 0 ? $"ChunkLength not set, using MaxInputLength = {chunk} (the current llm_convert.py refuses --max_input_length with --use_history_kv: set --chunk_length instead); " : $"ChunkLength not set, using SeqLength/4 = {chunk}; ")}MaxInputLength = ChunkLength = {chunk}, Dynamic=true{(Dynamic ? "" : " (forced)")}, as llm_convert.py derives them."));
        return derived;
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
        if (ChunkLength > SeqLength / 2)
            throw new LlmBuildException(ErrorCodes.BadChunkLength,
                $"ChunkLength ({ChunkLength}) must not be larger than SeqLength/2 ({SeqLength / 2}), as llm_convert.py requires. Lower ChunkLength (--chunk_length) or raise SeqLength.");
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
