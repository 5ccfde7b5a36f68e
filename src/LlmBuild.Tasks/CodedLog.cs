using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Tasks;

/// <summary>
/// How every LlmBuild task reports: errors and warnings carry an LLMB code under the "LlmBuild" subcategory, and stage
/// progress goes both to the log (for people) and, when the build names a progress file, to that file as structured
/// events (for <c>llmbuild convert</c>'s display). Shared by <see cref="LlmTask"/> and the ToolTask <see cref="TpuMlirDeploy"/>.
/// </summary>
internal static class CodedLog
{
    public static void Error(TaskLoggingHelper log, string code, string message, string? file = null) =>
        log.LogError(subcategory: "LlmBuild", errorCode: code, helpKeyword: null, file: file, lineNumber: 0, columnNumber: 0,
            endLineNumber: 0, endColumnNumber: 0, message: message);

    public static void Error(TaskLoggingHelper log, LlmBuildException e) => Error(log, e.Code, e.Message, e.File);

    public static void Warning(TaskLoggingHelper log, LlmBuildWarning w) =>
        log.LogWarning(subcategory: "LlmBuild", warningCode: w.Code, helpKeyword: null, file: w.File, lineNumber: 0, columnNumber: 0,
            endLineNumber: 0, endColumnNumber: 0, message: w.Message);

    /// <summary>
    /// Logs a progress line and appends its event to <paramref name="progressFile"/>. With a progress file the line is
    /// of normal importance: the reader of the file shows the progress, and minimal-verbosity output would repeat it.
    /// </summary>
    public static void Progress(TaskLoggingHelper log, string? progressFile, BuildEvent e, string line)
    {
        log.LogMessage(string.IsNullOrEmpty(progressFile) ? MessageImportance.High : MessageImportance.Normal, line);
        if (!string.IsNullOrEmpty(progressFile)) BuildEventLog.Append(progressFile, e);
    }
}
