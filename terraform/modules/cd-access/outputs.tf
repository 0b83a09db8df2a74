output "role_bindings" {
  description = "namespace/name of the RoleBindings granted to the CD identity."
  value = [
    "${kubernetes_role_binding_v1.app_admin.metadata[0].namespace}/${kubernetes_role_binding_v1.app_admin.metadata[0].name}",
    "${kubernetes_role_binding_v1.features.metadata[0].namespace}/${kubernetes_role_binding_v1.features.metadata[0].name}",
    "${kubernetes_role_binding_v1.flagger.metadata[0].namespace}/${kubernetes_role_binding_v1.flagger.metadata[0].name}",
  ]
}
