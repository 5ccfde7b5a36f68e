using LlmBuild.Core.BModel;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;
using LlmBuild.Core.Quantization;

namespace LlmBuild.Core.Stages;

/// <summary>
/// Stage 5. Merges the piece bmodels into the deployable bin/&lt;name&gt;.bmodel (identical weight blobs stored
/// once) and mirrors the model's non-weight files into bin/config/. A pipeline-parallel build (DistributeStrategy=pp)
/// also gets bin/&lt;name&gt;_pp.tar, one bmodel per device with the manifest, and the manifest beside it
/// (<see cref="PipelinePackage"/>); another build removes a stale package.
/// </summary>
public static class CombineStage
{
    public static BModelCombineResult Run(ResolvedModel model, IReadOnlyList<string> pieceBModels, IReadOnlyList<string> configFiles,
        string outputBModel, string outputConfigDir)
    {
        // Nets in the order the resolved model lists its pieces, whatever order MSBuild passed them in.
        var byName = pieceBModels.ToDictionary(p => Path.GetFileNameWithoutExtension(p), StringComparer.Ordinal);
        var ordered = model.Pieces.Select(p => byName[p.Name]).ToArray();
        // A GGUF file carries its configuration and tokenizer as metadata: they are written as Hugging Face files.
        bool gguf = GgufCheckpoint.IsGgufPath(model.Options.ModelPath);
        CopyConfig(configFiles, outputConfigDir, gguf ? GgufTokenizerFiles.FileNames : []);
        if (gguf) GgufTokenizerFiles.Write(model.Options.ModelPath, outputConfigDir);
        if (model.Options.EmbeddingDisk)
        {
            // No embedding nets: the runtime looks tokens up in config/embedding.bin (activation dtype) on the host.
            using ICheckpoint checkpoint = FamilyCheckpoint.OpenForBuild(model.Options.ModelPath, model.Config);
            EmbeddingBin.Write(checkpoint, model, Path.Combine(outputConfigDir, NetContract.EmbeddingFileName));
        }
        // Built-in piece bmodels reference their coefficients in the weight files: checked here (zip directory CRCs),
        // streamed and sha256-checked while the output is written. A stale piece is deleted, so the next build recompiles it.
        var externals = new List<IReadOnlyDictionary<string, ExternalPayload>?>();
        var weightFiles = new Dictionary<string, string>(StringComparer.Ordinal);
        string? current = null;
        try
        {
            foreach (string piece in ordered)
            {
                current = piece;
                PieceCoeffReferences? references = PieceCoeffReferences.TryRead(piece);
                if (references is not null) weightFiles[piece] = references.WeightFilePath(piece);
                externals.Add(references?.Payloads(piece));
            }
            current = null;
            var result = BModelCombiner.Combine(ordered, outputBModel, externals: externals);
            string outputDir = Path.GetDirectoryName(Path.GetFullPath(outputBModel))!;
            string package = Path.Combine(outputDir, PipelineParallel.PackageFileName(model.Name));
            string manifest = Path.Combine(outputDir, PipelineParallel.ManifestFileName(model.Name));
            if (PipelineParallel.IsPipeline(model.Options))
            {
                // The stage bmodels are combined in a scratch folder beside the output and live on inside the package.
                string stageDir = Path.Combine(outputDir, $".{model.Name}_pp_stages");
                var externalsByPiece = ordered.Select((path, i) => (path, i)).ToDictionary(x => x.path, x => externals[x.i], StringComparer.Ordinal);
                PipelinePackage.Write(model, byName, stageDir, package, manifest, externalsByPiece);
                Directory.Delete(stageDir, recursive: true);
            }
            else
            {
                AtomicFile.Delete(package);
                AtomicFile.Delete(manifest);
            }
            return result;
        }
        catch (LlmBuildException e) when (e.Code is ErrorCodes.StaleCoefficientReference or ErrorCodes.BadCoefficientReference && (e.File ?? current) is not null)
        {
            // Every piece that references the same weight file was compiled from the same bytes: all of them go.
            string stale = (e.File ?? current)!;
            foreach (string piece in ordered.Where(p => !weightFiles.ContainsKey(p)))
            {
                try
                {
                    if (PieceCoeffReferences.TryRead(piece) is { } r) weightFiles[piece] = r.WeightFilePath(piece);
                }
                catch (LlmBuildException) { } // a damaged piece: the next combine reports it
            }
            var deleted = weightFiles.TryGetValue(stale, out string? weights)
                ? weightFiles.Where(kv => kv.Value == weights).Select(kv => kv.Key).Append(stale).Distinct().Order(StringComparer.Ordinal).ToArray()
                : [stale];
            foreach (string piece in deleted) AtomicFile.Delete(piece);
            throw new LlmBuildException(e.Code, e.Message + $" Deleted {string.Join(", ", deleted.Select(d => $"'{d}'"))}: build again to compile them from the current weights.", stale, e);
        }
    }

    private static void CopyConfig(IReadOnlyList<string> files, string outputConfigDir, IReadOnlyList<string> generated)
    {
        AtomicFile.CreateDirectory(outputConfigDir);
        var names = new HashSet<string>(generated, StringComparer.Ordinal) { NetContract.EmbeddingFileName };
        foreach (string file in files.Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(file);
            names.Add(name);
            AtomicFile.Write(Path.Combine(outputConfigDir, name), s => { using var src = File.OpenRead(file); src.CopyTo(s); });
        }
        // A file that left the model folder leaves config/ too.
        foreach (string stale in Directory.EnumerateFiles(outputConfigDir).Where(f => !names.Contains(Path.GetFileName(f))))
            AtomicFile.Delete(stale);
    }
}
