using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using LlmBuild.Core.Codegen;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Plan;

namespace LlmBuild.Tasks;

/// <summary>
/// Stage 4 with the tpu-mlir backend: runs TPU-MLIR's model_deploy.py on one piece's MLIR (batch the task over the pieces)
/// with the flags llm_convert.py uses, producing a silicon bmodel. The tool writes to a temporary name that is renamed
/// into place only when it succeeds, so a failed or killed run leaves no half-written bmodel.
/// </summary>
public sealed class TpuMlirDeploy : ToolTask
{
    [Required] public string ResolvedFile { get; set; } = "";
    [Required] public string Piece { get; set; } = "";
    [Required] public string Mlir { get; set; } = "";
    [Required] public string BModel { get; set; } = "";
    /// <summary>model_deploy.py itself, its folder, or a TPU-MLIR checkout; empty = search PATH.</summary>
    public string? TpuMlirPath { get; set; }
    /// <summary>The file the build's progress events go to (the LlmBuildProgressFile property); empty: none.</summary>
    public string? ProgressFile { get; set; }

    private ResolvedModel? _model;
    /// <summary>Set when the bmodel's folder could not be written: the coded error is logged, not a model_deploy.py failure.</summary>
    private bool _fileError;
    private string TemporaryBModel => BModel + ".tmp.bmodel";

    protected override string ToolName => TpuMlirCommand.ToolName;

    protected override string GenerateFullPathToTool() =>
        TpuMlirCommand.Locate(TpuMlirPath, Environment.GetEnvironmentVariable("PATH")) ?? "";

    protected override string? GetWorkingDirectory() => Path.GetDirectoryName(Path.GetFullPath(Mlir));

    protected override bool ValidateParameters()
    {
        if (string.IsNullOrEmpty(ToolPath) && GenerateFullPathToTool().Length == 0)
        {
            LogCoded(ErrorCodes.TpuMlirFailed, string.IsNullOrWhiteSpace(TpuMlirPath)
                ? "model_deploy.py is not on PATH. Install TPU-MLIR and source its envsetup.sh, or set TpuMlirPath to its folder."
                : $"TpuMlirPath='{TpuMlirPath}' holds no model_deploy.py (looked at the path itself, {ToolName} in it, and python/tools/{ToolName}).");
            return false;
        }
        try
        {
            _model = ResolvedModel.Load(ResolvedFile);
            _ = _model.Piece(Piece);
        }
        catch (LlmBuildException e)
        {
            CodedLog.Error(Log, e);
            return false;
        }
        return true;
    }

    protected override string GenerateCommandLineCommands()
    {
        var builder = new CommandLineBuilder();
        foreach (string arg in TpuMlirCommand.Arguments(_model!, _model!.Piece(Piece), Path.GetFullPath(Mlir), Path.GetFullPath(TemporaryBModel)))
        {
            if (arg.StartsWith("--", StringComparison.Ordinal)) builder.AppendSwitch(arg);
            else builder.AppendFileNameIfNotNull(arg);
        }
        return builder.ToString();
    }

    protected override int ExecuteTool(string pathToTool, string responseFileCommands, string commandLineCommands)
    {
        try
        {
            return DeployAndRename(pathToTool, responseFileCommands, commandLineCommands);
        }
        catch (LlmBuildException e)
        {
            // A read-only or full obj/ folder: the coded error with its path, not a task crash.
            LogCoded(e.Code, e.Message, e.File);
            _fileError = true;
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogCoded(ErrorCodes.WriteFailed, $"Cannot write '{BModel}': {e.Message.TrimEnd('.')}. Check free disk space and permissions.", BModel);
            _fileError = true;
            return 1;
        }
    }

    private int DeployAndRename(string pathToTool, string responseFileCommands, string commandLineCommands)
    {
        AtomicFile.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(BModel))!);
        AtomicFile.Delete(TemporaryBModel);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        int exit = base.ExecuteTool(pathToTool, responseFileCommands, commandLineCommands);
        if (exit == 0 && File.Exists(TemporaryBModel))
        {
            File.Move(TemporaryBModel, BModel, overwrite: true);
            // The pieces are this backend's codegen stage: progress reports them under the built-in stage's name.
            double seconds = Math.Round(watch.Elapsed.TotalSeconds, 2);
            CodedLog.Progress(Log, ProgressFile, new BuildEvent(BuildEventKind.PieceDone, nameof(CompileLlmPieces), Piece, seconds), $"{Piece}: done in {seconds:0.00} s");
            return 0;
        }
        AtomicFile.Delete(TemporaryBModel);
        if (exit == 0)
        {
            LogCoded(ErrorCodes.TpuMlirFailed, $"{ToolName} exited with 0 for piece {Piece} but wrote no bmodel ('{TemporaryBModel}').");
            return 1;
        }
        return exit;
    }

    protected override bool HandleTaskExecutionErrors()
    {
        if (_fileError) return false; // already logged, and not the tool's fault
        LogCoded(ErrorCodes.TpuMlirFailed, $"{ToolName} failed for piece {Piece} (exit code {ExitCode}); its output is above. Check the TPU-MLIR installation, or unset TpuMlirPath to use the built-in backend.", Mlir);
        return false;
    }

    private void LogCoded(string code, string message, string? file = null) => CodedLog.Error(Log, code, message, file);
}
