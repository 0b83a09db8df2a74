# What PEFM needs on any cluster, wired once: Knative (with the GPU settings of the cluster
# module's contract), the data namespace and database, and monitoring. The examples call it with a
# cluster module's outputs; providers come from the caller.
module "knative" {
  source = "../knative"

  platform          = var.platform
  domain            = var.domain
  gpu_node_selector = var.gpu_node_selector
  gpu_node_taint    = var.gpu_node_taint
}

module "data" {
  source = "../data"

  managed_database_url = var.managed_database_url
}

module "monitoring" {
  source = "../monitoring"

  app_namespace = module.data.namespace
}
