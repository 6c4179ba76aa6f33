"""
Third-party shimd plugins: a module here (or in any C{shimd/plugins}
directory on C{sys.path}) that defines objects providing
L{shimd.interfaces.IShimPlugin} and L{twisted.plugin.IPlugin} adds them to
every shim.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
