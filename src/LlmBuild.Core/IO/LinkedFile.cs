namespace LlmBuild.Core.IO;

/// <summary>
/// The file a path finally names. Hugging Face's cache lays checkpoints out as symlinks into a blob store, and
/// .NET's FileInfo on a link reports the link itself (a few bytes), not the file it points to.
/// </summary>
public static class LinkedFile
{
    public static FileInfo Resolve(string path)
    {
        var info = new FileInfo(path);
        return info.LinkTarget is null ? info : info.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? info;
    }
}
