# Renders a kubeconfig whose user authenticates with the cloud's credential plugin: the file
# holds no secret of its own, only how to ask the cloud CLI for a token.
locals {
  kubeconfig = yamlencode({
    apiVersion        = "v1"
    kind              = "Config"
    "current-context" = var.cluster_name
    clusters = [{
      name = var.cluster_name
      cluster = {
        server                       = var.host
        "certificate-authority-data" = base64encode(var.cluster_ca_certificate)
      }
    }]
    contexts = [{
      name    = var.cluster_name
      context = { cluster = var.cluster_name, user = var.cluster_name }
    }]
    users = [{
      name = var.cluster_name
      user = {
        exec = {
          apiVersion         = var.exec_auth.api_version
          command            = var.exec_auth.command
          args               = var.exec_auth.args
          interactiveMode    = "Never"
          provideClusterInfo = false
        }
      }
    }]
  })
}
