using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Plan;

/// <summary>One device's entry in a pipeline package's manifest.</summary>
public sealed record PipelineManifestStage(int Device, string File, IReadOnlyList<string> Nets, IReadOnlyList<int> Layers, long Bytes, string Sha256);

/// <summary>&lt;name&gt;_pp.json: what each device of a pipeline-parallel build loads.</summary>
public sealed record PipelineManifest(string Format, int Version, string Model, string Chip, int NumDevice, int SeqLength, int NumLayers,
    IReadOnlyList<PipelineManifestStage> Stages)
{
    public const string FormatName = "llmbuild-pp";
    public const int CurrentVersion = 1;

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json) + "\n";
}

/// <summary>
/// The pipeline-parallel package (DistributeStrategy=pp): one bmodel per device (<see cref="PipelineParallel.Stages"/>),
/// combined from the piece bmodels like the whole model, packed with the manifest into &lt;name&gt;_pp.tar (manifest
/// first, then the stage bmodels in device order), and the manifest written beside it as &lt;name&gt;_pp.json.
/// </summary>
public static class PipelinePackage
{
    /// <param name="pieceBModels">Piece name → its compiled bmodel.</param>
    /// <param name="stageDir">Where the stage bmodels are combined (an intermediate folder).</param>
    /// <param name="externals">Piece bmodel path → the coefficient payloads it references in a weight file instead of holding (null: it holds them).</param>
    public static PipelineManifest Write(ResolvedModel model, IReadOnlyDictionary<string, string> pieceBModels, string stageDir, string packagePath, string manifestPath,
        IReadOnlyDictionary<string, IReadOnlyDictionary<string, ExternalPayload>?>? externals = null)
    {
        var stages = PipelineParallel.Stages(model);
        var entries = new List<PipelineManifestStage>();
        var files = new List<string>();
        foreach (PipelineStage stage in stages)
        {
            string file = Path.Combine(stageDir, stage.FileName(model.Name));
            string[] inputs = stage.Pieces.Select(p => pieceBModels[p]).ToArray();
            BModelCombiner.Combine(inputs, file, externals: inputs.Select(i => externals?.GetValueOrDefault(i)).ToArray());
            string sha;
            using (var s = File.OpenRead(file)) sha = Convert.ToHexStringLower(SHA256.HashData(s));
            entries.Add(new PipelineManifestStage(stage.Device, stage.FileName(model.Name), stage.Pieces, stage.Layers, new FileInfo(file).Length, sha));
            files.Add(file);
        }
        var manifest = new PipelineManifest(PipelineManifest.FormatName, PipelineManifest.CurrentVersion, model.Name, model.Options.Chip,
            model.Options.NumDevice, model.SeqLength, model.Config.NumLayers, entries);
        byte[] json = new System.Text.UTF8Encoding(false).GetBytes(manifest.ToJson());
        AtomicFile.Write(packagePath, stream =>
        {
            var tar = new TarWriter(stream);
            tar.Add(Path.GetFileName(manifestPath), json);
            for (int i = 0; i < files.Count; i++)
            {
                string file = files[i];
                tar.Add(entries[i].File, entries[i].Bytes, s => { using var src = File.OpenRead(file); src.CopyTo(s); });
            }
            tar.Finish();
        });
        AtomicFile.WriteAllBytes(manifestPath, json);
        return manifest;
    }

    /// <summary>
    /// Reads a package: its manifest, and each stage bmodel extracted to <paramref name="extractDir"/> after checking it
    /// against the manifest's size and sha256. Returns the manifest and the stage files in device order.
    /// </summary>
    public static (PipelineManifest Manifest, IReadOnlyList<string> StageFiles) Extract(string packagePath, string extractDir)
    {
        var members = TarReader.List(packagePath);
        if (members.Count == 0 || !members[0].Name.EndsWith("_pp.json", StringComparison.Ordinal))
            throw Bad(packagePath, "its first member is not the manifest <name>_pp.json");
        using var file = File.OpenRead(packagePath);
        byte[] ReadMember(TarMember m)
        {
            var bytes = new byte[checked((int)m.Size)];
            file.Position = m.Offset;
            file.ReadExactly(bytes);
            return bytes;
        }
        PipelineManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<PipelineManifest>(ReadMember(members[0]), PipelineManifest.Json)
                ?? throw Bad(packagePath, "the manifest is empty");
        }
        catch (JsonException e) { throw Bad(packagePath, $"the manifest is not valid JSON ({e.Message})"); }
        if (manifest.Format != PipelineManifest.FormatName || manifest.Version != PipelineManifest.CurrentVersion || manifest.Stages is null
            || manifest.Stages.Count != manifest.NumDevice || manifest.Stages.Select(s => s.Device).Where((d, i) => d != i).Any())
            throw Bad(packagePath, $"the manifest is not a {PipelineManifest.FormatName} v{PipelineManifest.CurrentVersion} manifest with one stage per device in order");
        Directory.CreateDirectory(extractDir);
        var paths = new List<string>();
        foreach (var stage in manifest.Stages)
        {
            TarMember member = members.FirstOrDefault(m => m.Name == stage.File) ?? throw Bad(packagePath, $"it has no member '{stage.File}' for device {stage.Device}");
            if (member.Size != stage.Bytes) throw Bad(packagePath, $"'{stage.File}' has {member.Size} bytes, the manifest says {stage.Bytes}");
            string target = Path.Combine(extractDir, Path.GetFileName(stage.File));
            using (var output = File.Create(target))
            using (var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                file.Position = member.Offset;
                var buffer = new byte[1 << 20];
                for (long left = member.Size; left > 0;)
                {
                    int n = file.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                    if (n <= 0) throw Bad(packagePath, $"'{stage.File}' is truncated");
                    sha.AppendData(buffer, 0, n);
                    output.Write(buffer, 0, n);
                    left -= n;
                }
                if (Convert.ToHexStringLower(sha.GetHashAndReset()) != stage.Sha256)
                    throw Bad(packagePath, $"'{stage.File}' does not match the manifest's sha256");
            }
            paths.Add(target);
        }
        return (manifest, paths);
    }

    private static LlmBuildException Bad(string path, string what) =>
        new(ErrorCodes.BadPipelinePackage, $"Pipeline package '{path}': {what}. Rebuild it (dotnet build with DistributeStrategy=pp).", path);
}
